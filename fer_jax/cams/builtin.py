"""Built-in maps of the training-time methods, scored like any other CAM method.

- "wildcat", "acol", "prm": the class map of the model's head (fer_jax.methods)
  applied to the captured cam layer (stage4), for the explained class.
- "tscam": TS-CAM's semantic map of the class (3x3 conv head over the normed patch
  grid) times the class token's attention to the patches, averaged over heads and
  summed over blocks.
Each applies only to a model trained with that head. ADL and CutMix keep the
linear GAP head: their built-in map is "cam" (fer_jax.cams.head). No ReLU: like
CAM, the raw map is min-max normalised (docs/method.md, "Training-time methods").
A method's record (fer_jax.methods) names its map (`cam_method`); a new head
method registers its map with `head_map_method`.
"""
from typing import Callable, FrozenSet, Optional, cast

import jax.numpy as jnp

from fer_jax import methods
from fer_jax.cams import base
from fer_jax.models.contract import Explainable, ModelView, describe


def _requires_head(name: str) -> Callable[[ModelView], Optional[str]]:
    def requires(model: ModelView) -> Optional[str]:
        if model.head == name:
            return None
        return (f"is the built-in map of the {name!r} head "
                f"(config.{methods.get(name).switch[0]}={name!r})")
    return requires


def head_class_map(x: base.LayerInputs) -> jnp.ndarray:
    """The head's own map of the target class at the cam layer: (B, h, w)."""
    # Declared in `needs` (features, head_maps) or always set (classes): the engine fills them.
    assert x.head_maps is not None and x.features is not None and x.classes is not None
    return x.head_maps(x.features, x.classes)


def ts_cam(x: base.LayerInputs) -> jnp.ndarray:
    """Semantic map of the class x the class token's attention to the patches: (B, h, w)."""
    # Declared in `needs` (attention, features, head_maps) or always set (classes).
    assert x.attention is not None and x.head_maps is not None
    assert x.features is not None and x.classes is not None
    # cast: typeshed's sum() of arrays says "| Literal[0]" (the start value, never returned here).
    attention = cast(jnp.ndarray, sum(jnp.mean(p.astype(jnp.float32), axis=1)[:, 0, 1:]
                                      for p in x.attention))
    semantic = x.head_maps(x.features, x.classes)
    return semantic * attention.reshape(semantic.shape)


def head_map_method(name: str, summary: str,
                    fn: Callable[[base.LayerInputs], jnp.ndarray] = head_class_map,
                    needs: FrozenSet[str] = frozenset(), in_paper: bool = False
                    ) -> base.CamMethod:
    """The CAM method of the head of training-time method `name` (its `class_maps` at the
    cam layer, for the explained class; `needs` adds to what `fn` reads besides those)."""
    return base.CamMethod(
        name=name, summary=summary, fn=fn, needs=frozenset({base.FEATURES, base.HEAD_MAPS}) | needs,
        source=base.CAM_LAYER, output="map", relu=False, requires=_requires_head(name),
        in_paper=in_paper)


for _name, _summary in (
        ("wildcat", "Durand et al. 2017: WILDCAT's class map (modalities averaged)"),
        ("acol", "Zhang et al. 2018: max of ACoL's two normalised branch maps"),
        ("prm", "Zhou et al. 2018: PRM's class response map")):
    base.register(head_map_method(_name, _summary, in_paper=True))
base.register(head_map_method(
    "tscam", "Gao et al. 2021: TS-CAM's semantic map x class-token attention (ViT)", ts_cam,
    frozenset({base.ATTENTION}), in_paper=True))


def builtin_method(model: Explainable) -> Optional[str]:
    """The registry name of the map `model` builds in: its training-time head's (the method's
    `cam_method`), "cam" for a GAP head (also ADL and CutMix), else None."""
    view = describe(model)
    method = methods.REGISTRY.get(view.head) if view.head is not None else None
    if method is not None and method.head is not None:
        return method.cam_method
    return "cam" if view.gap_head else None
