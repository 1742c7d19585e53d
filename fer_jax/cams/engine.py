"""One engine for every CAM method: one forward, at most one backward, every map.

`explain` reads what the selected methods need (fer_jax.cams.base), asks
fer_jax.capture for all of it in a single eval-mode pass (features of every
layer involved, gradients of the target scores at the layers of the gradient
methods, attention probabilities), then computes each method's map:

  raw map per layer  (channel sum of the weighted activations, or their first
                      principal component with eigen_smooth; ReLU where the
                      method says so)
  -> per layer: min-max, bilinear to the input size, clamped to [0, 1]
  -> several layers: mean, then min-max again (pytorch-grad-cam's aggregation)
  -> aug_smooth: the mean over horizontal flip x {1, 0.9, 1.1} input scaling,
                 each map flipped back (pytorch-grad-cam's test-time augmentation)

Everything is jittable; the evaluation step runs it per device.
"""
import dataclasses
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, cast

import jax
import jax.numpy as jnp

from fer_jax import capture, maps
from fer_jax.cams import base
from fer_jax.cams.eigen import first_component
from fer_jax.errors import ConfigError
from fer_jax.models.contract import Explainable, ModelView, describe

# aug_smooth variants: (horizontal flip, input scale); the identity first, so
# the probe of the original batch is the first B rows.
_AUG_VARIANTS = ((False, 1.0), (False, 0.9), (False, 1.1), (True, 1.0), (True, 0.9), (True, 1.1))


@dataclasses.dataclass(frozen=True)
class CamSpec:
    """Which maps to compute, and how (hashable: a static argument of jitted steps).

    methods: registry names; layers: the (B, h, w, C) layers of the per-layer
    methods (maps averaged over them); aug_smooth, eigen_smooth: as in
    pytorch-grad-cam; score_batch: images per forward pass in Score-CAM;
    same_as: (method, earlier method) pairs whose maps are provably identical for this
    model (identical_methods): the first is not computed, it is the second's map.
    """
    methods: Tuple[str, ...]
    layers: Tuple[str, ...]
    aug_smooth: bool = False
    eigen_smooth: bool = False
    score_batch: int = 256
    same_as: Tuple[Tuple[str, str], ...] = ()

    @property
    def computed(self) -> Tuple[str, ...]:
        """The methods whose maps are computed (and scored): every method but the copies."""
        copies = {alias for alias, _ in self.same_as}
        return tuple(m for m in self.methods if m not in copies)


# With a linear head on the global average of the cam layer, logits = mean_hw(F) W + b,
# so d logit_k / dF = W[:, k] / (h w) at every position: Grad-CAM's channel weights
# (the mean gradient) are that constant, HiResCAM's gradient x activation is the same
# sum, and XGrad-CAM's weights sum_hw(G F) / sum_hw(F) are the same constant wherever
# sum_hw(F) is not ~0, which holds for non-negative (post-ReLU) features. CAM differs:
# it keeps the negative part of the map (no ReLU) before min-max.
_GAP_LINEAR_IDENTICAL = ("gradcam", "hirescam", "xgradcam")


def identical_methods(model: Explainable, methods: Sequence[str], layers: Sequence[str]
                      ) -> Tuple[Tuple[str, str], ...]:
    """(copy, original) pairs of `methods` whose maps are provably the same for `model`.

    Only for a linear GAP head directly after the cam layer, with the per-layer maps
    taken at that layer alone (see _GAP_LINEAR_IDENTICAL); XGrad-CAM joins only where
    the model declares that layer non-negative (`cam_layer_nonnegative`, a ResNet).
    """
    view = describe(model)
    if not view.gap_head or tuple(layers) != (view.cam_layer,):
        return ()
    group = [m for m in methods if m in _GAP_LINEAR_IDENTICAL
             and (m != "xgradcam" or view.cam_layer_nonnegative)]
    return tuple((m, group[0]) for m in group[1:])


def spec_for(model: Explainable, methods: Sequence[str] = (), layers: Sequence[str] = (),
             aug_smooth: bool = False, eigen_smooth: bool = False, score_batch: int = 256,
             available_layers: Optional[Mapping[str, Any]] = None,
             key: str = "eval", merge_identical: bool = True) -> CamSpec:
    """A checked CamSpec. methods: names and sets (base.select; () = the paper's set);
    layers () = the model's default_cam_layers; merge_identical: compute provably identical maps
    once (identical_methods). Unknown names raise ConfigError naming them."""
    view = describe(model)
    chosen = tuple(base.select(methods, view, key=f"{key}.cam_methods"))
    # A model may read its maps elsewhere than its head's input (a ViT: the last
    # block, docs/method.md "Which layer a ViT's maps read").
    layers = tuple(layers) or view.default_cam_layers
    if not layers:
        raise ConfigError(f"config.{key}.cam_layers: {view.title} declares no cam layer; "
                          "name the layers")
    if available_layers is not None:
        capture.check_layers(layers, available_layers, key=f"{key}.cam_layers")
    same = identical_methods(view, chosen, layers) if merge_identical else ()
    return CamSpec(chosen, layers, bool(aug_smooth), bool(eigen_smooth), int(score_batch), same)


class Explanation(NamedTuple):
    """maps: {method: (B, H, W) float32 in [0, 1]}; probe: the pass that made them."""
    maps: Dict[str, jnp.ndarray]
    probe: capture.Probe


def _layers_of(method: base.CamMethod, view: ModelView, spec: CamSpec
               ) -> Sequence[Optional[str]]:
    if method.source == base.PER_LAYER:
        return spec.layers
    if method.source == base.CAM_LAYER:
        return (view.cam_layer,)
    return (None,)   # ALL_BLOCKS, INPUT: one map from the method's own inputs


def _head_params(view: ModelView, variables: Mapping[str, Any]) -> Any:
    # The methods that read the head require one (needs_gap_head, builtin's requires).
    assert view.head_name is not None, f"{view.title} declares no head_name"
    return variables["params"][view.head_name]


def _head_maps(view: ModelView, variables: Mapping[str, Any]
               ) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
    """(features, classes) -> (B, h, w) class maps of the model's training-time head.

    The head is applied on its own to the captured cam-layer features, so the map
    of any class costs the head alone (ACoL erases by that class, not the prediction).
    """
    assert view.head_module is not None, f"{view.title} has no training-time head"
    head = view.head_module()
    params = {"params": _head_params(view, variables)}
    return lambda feats, classes: head.apply(params, feats, classes, method="class_maps")


def _explain_once(view: ModelView, variables: Mapping[str, Any], images: jnp.ndarray,
                  classes: jnp.ndarray, spec: CamSpec, sample_ids: jnp.ndarray,
                  extra_layers: Sequence[str]) -> Tuple[Dict[str, jnp.ndarray], capture.Probe]:
    methods: List[base.CamMethod] = [base.REGISTRY[n] for n in spec.computed]
    needs = set().union(*(m.needs for m in methods)) if methods else set()
    feature_layers: List[str] = list(extra_layers)
    grad_layers: List[str] = []
    for m in methods:
        if base.FEATURES in m.needs:
            feature_layers.extend(n for n in _layers_of(m, view, spec) if n)
        if base.GRADIENTS in m.needs:
            grad_layers.extend(n for n in _layers_of(m, view, spec) if n)
    taps = view.attention_layers if base.ATTENTION in needs else ()
    # Set by cams.any_module for modules that are not fer_jax's: the score to explain,
    # and how a token layer becomes a (B, h, w, C) grid.
    target = view.cam_target or capture.class_logit
    probe = capture.probe(view.apply, variables, images, classes,
                          feature_layers=tuple(dict.fromkeys(feature_layers)),
                          grad_layers=tuple(dict.fromkeys(grad_layers)), tap_layers=taps,
                          target=target)
    reshape = view.reshape_transform
    if reshape is not None:   # as pytorch-grad-cam: the same transform for both
        probe = probe._replace(features={n: reshape(f) for n, f in probe.features.items()},
                               gradients={n: reshape(g) for n, g in probe.gradients.items()})

    def class_scores(imgs: jnp.ndarray, cls: jnp.ndarray) -> jnp.ndarray:
        return target(view.apply(variables, imgs), cls).astype(jnp.float32)

    size = (images.shape[1], images.shape[2])
    patch = view.patch_size
    grid = (size[0] // patch, size[1] // patch) if patch else None
    head = _head_params(view, variables)["kernel"] if base.HEAD in needs else None
    head_maps = _head_maps(view, variables) if base.HEAD_MAPS in needs else None
    out: Dict[str, jnp.ndarray] = {}
    for m in methods:
        per_layer = []
        for layer in _layers_of(m, view, spec):
            inputs = base.LayerInputs(
                features=probe.features.get(layer) if layer else None,
                gradients=probe.gradients.get(layer) if layer else None,
                head_kernel=head, classes=classes,
                attention=[probe.taps[n] for n in taps] if base.ATTENTION in m.needs else None,
                images=images, class_scores=class_scores if base.FORWARDS in m.needs else None,
                grid=grid, sample_ids=sample_ids, score_batch=spec.score_batch,
                head_maps=head_maps)
            raw = m.fn(inputs)
            if m.output == "weighted":
                raw = first_component(raw) if spec.eigen_smooth else jnp.sum(raw, axis=-1)
            if m.relu:
                raw = jnp.maximum(raw, 0.0)
            per_layer.append(maps.upsample_cam(raw, size))
        # cast: typeshed's sum() says "| Literal[0]" (the start value; per_layer is never empty).
        out[m.name] = per_layer[0] if len(per_layer) == 1 else maps.min_max(
            cast(jnp.ndarray, sum(per_layer)) / len(per_layer))
    for alias, original in spec.same_as:
        out[alias] = out[original]
    return out, probe


def explain(model: Explainable, variables: Mapping[str, Any], images: jnp.ndarray,
            classes: jnp.ndarray, spec: CamSpec, sample_ids: Optional[jnp.ndarray] = None,
            extra_layers: Sequence[str] = ()) -> Explanation:
    """Every map of `spec` for a batch, from one forward and at most one backward.

    images (B, H, W, 3) normalised; classes (B,) int: the class each map
    explains (ground truth in evaluation, the prediction in predict);
    sample_ids (B,) int: seeds of the random reference map (default 0..B-1);
    extra_layers: further (B, h, w, C) layers to capture in the same pass
    (e.g. for ATT-COS), returned in `.probe.features`.
    Returns Explanation(maps={method: (B, H, W) float32 in [0, 1]}, probe=
    logits, features, ... of the original, un-augmented batch).
    """
    view = describe(model)
    b = images.shape[0]
    classes = classes.astype(jnp.int32)
    sample_ids = jnp.arange(b) if sample_ids is None else sample_ids
    if not spec.aug_smooth:
        out, probe = _explain_once(view, variables, images, classes, spec, sample_ids,
                                   extra_layers)
    else:
        batch = jnp.concatenate(
            [(images[:, :, ::-1] if flip else images) * scale for flip, scale in _AUG_VARIANTS])
        n = len(_AUG_VARIANTS)
        out, probe = _explain_once(view, variables, batch, jnp.tile(classes, n), spec,
                                   jnp.tile(sample_ids, n), extra_layers)
        flips = jnp.array([flip for flip, _ in _AUG_VARIANTS])[:, None, None, None]
        for name, m in out.items():
            m = m.reshape((n, b) + m.shape[1:])
            out[name] = jnp.mean(jnp.where(flips, m[:, :, :, ::-1], m), axis=0)
        probe = jax.tree.map(lambda x: x[:b], probe)
    return Explanation(out, probe)
