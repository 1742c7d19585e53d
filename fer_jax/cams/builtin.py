"""Built-in maps of the training-time methods, scored like any other CAM method.

- "wildcat", "acol", "prm": the class map of the model's head (fer_jax.models.wsol)
  applied to the captured cam layer (stage4), for the explained class.
- "tscam": TS-CAM's semantic map of the class (3x3 conv head over the normed patch
  grid) times the class token's attention to the patches, averaged over heads and
  summed over blocks.
Each applies only to a model trained with that head. ADL and CutMix keep the
linear GAP head: their built-in map is "cam" (fer_jax.cams.head). No ReLU: like
CAM, the raw map is min-max normalised (docs/method.md, "Training-time methods").
"""
from typing import Any, Callable, Optional

import jax.numpy as jnp

from fer_jax.cams import base


def _requires_head(name: str) -> Callable[[Any], Optional[str]]:
    def requires(model: Any) -> Optional[str]:
        if getattr(model, "head", None) == name:
            return None
        key = "model.vit_head" if name == "tscam" else "model.head"
        return f"is the built-in map of the {name!r} head (config.{key}={name!r})"
    return requires


def head_class_map(x: base.LayerInputs) -> jnp.ndarray:
    """The head's own map of the target class at the cam layer: (B, h, w)."""
    return x.head_maps(x.features, x.classes)


def ts_cam(x: base.LayerInputs) -> jnp.ndarray:
    """Semantic map of the class x the class token's attention to the patches: (B, h, w)."""
    attention = sum(jnp.mean(p.astype(jnp.float32), axis=1)[:, 0, 1:] for p in x.attention)
    semantic = x.head_maps(x.features, x.classes)
    return semantic * attention.reshape(semantic.shape)


METHODS = ("wildcat", "acol", "prm", "tscam")

for _name, _summary in (
        ("wildcat", "Durand et al. 2017: WILDCAT's class map (modalities averaged)"),
        ("acol", "Zhang et al. 2018: max of ACoL's two normalised branch maps"),
        ("prm", "Zhou et al. 2018: PRM's class response map")):
    base.register(base.CamMethod(
        name=_name, summary=_summary, fn=head_class_map,
        needs=frozenset({base.FEATURES, base.HEAD_MAPS}), source=base.CAM_LAYER, output="map",
        relu=False, requires=_requires_head(_name), in_paper=True))

base.register(base.CamMethod(
    name="tscam", summary="Gao et al. 2021: TS-CAM's semantic map x class-token attention (ViT)",
    fn=ts_cam, needs=frozenset({base.FEATURES, base.HEAD_MAPS, base.ATTENTION}),
    source=base.CAM_LAYER, output="map", relu=False, requires=_requires_head("tscam"),
    in_paper=True))


def builtin_method(model: Any) -> Optional[str]:
    """The registry name of the map `model` builds in: its training-time head's
    ("wildcat", "acol", "prm", "tscam"), "cam" for a GAP head (also ADL and CutMix), else None."""
    head = getattr(model, "head", None)
    if head in METHODS:
        return head
    return "cam" if getattr(model, "gap_head", False) else None
