"""AU alignment: capture named layers, their attention maps and the masked cosine loss.

Works for any linen model whose chosen layers output (B, H, W, C): the layers
are collected with `capture_intermediates`, so the model needs no change.
Formulas follow method.md ("Alignment loss", "Evaluation").
"""
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

_EPS = 1e-8


def capture_filter(layers: Sequence[str]) -> Callable[[nn.Module, str], bool]:
    """`capture_intermediates` filter keeping the `__call__` outputs of `layers`.

    Layer names are module paths below the root, e.g. "stage4" or "stage4/block1".
    """
    wanted = frozenset(layers)
    return lambda mdl, method: method == "__call__" and "/".join(mdl.path) in wanted


def captured(intermediates: Mapping[str, Any], layer: str) -> jnp.ndarray:
    """The output of `layer` from an `intermediates` collection."""
    node = intermediates
    for part in layer.split("/"):
        node = node[part]
    return node["__call__"][0]


def spatial_layers(model: nn.Module, variables: Mapping[str, Any],
                   image_shape: Tuple[int, int, int]) -> Dict[str, Tuple[int, ...]]:
    """All layers of `model` with a (B, H, W, C) output: {name: output shape}.

    Found by tracing one abstract forward pass (no FLOPs spent).
    """
    x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
    order: List[str] = []  # the filter sees modules in call order: keep the model's order

    def record(mdl: nn.Module, method: str) -> bool:
        if method == "__call__" and mdl.path:
            order.append("/".join(mdl.path))
        return True

    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=record,
                                 mutable=["intermediates"]), variables, x)
    found: Dict[str, Tuple[int, ...]] = {}
    for name in dict.fromkeys(order):
        out = captured(state["intermediates"], name)
        if hasattr(out, "shape") and len(out.shape) == 4:
            found[name] = tuple(out.shape)
    return found


def check_layers(layers: Sequence[str], available: Mapping[str, Tuple[int, ...]],
                 key: str = "align.layers") -> None:
    """Raises ValueError naming any layer that is not a (B, H, W, C) layer of the model."""
    bad = [name for name in layers if name not in available]
    if bad:
        top = [n for n in available if "/" not in n]
        raise ValueError(
            f"config.{key}: unknown layer {bad[0]!r}; valid layers: {top} "
            f"(or nested paths such as {next((n for n in available if '/' in n), top[-1])!r}; "
            f"{len(available)} in all)")


def attention_map(features: jnp.ndarray) -> jnp.ndarray:
    """Channel mean of (B, H, W, C) features -> (B, H, W) float32."""
    return jnp.mean(features.astype(jnp.float32), axis=-1)


def resize_clamped(maps: jnp.ndarray, size: Tuple[int, int], antialias: bool) -> jnp.ndarray:
    """Bilinear resize of (B, h, w) maps to (B, *size), clamped to each map's own range.

    The clamp removes the overshoot of the resampling kernel (method.md).
    """
    maps = maps.astype(jnp.float32)
    out = jax.image.resize(maps, (maps.shape[0],) + tuple(size), method="linear",
                           antialias=antialias)
    lo = jnp.min(maps, axis=(1, 2), keepdims=True)
    hi = jnp.max(maps, axis=(1, 2), keepdims=True)
    return jnp.clip(out, lo, hi)


def cosine(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Per-sample cosine similarity of (B, H, W) maps -> (B,)."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    num = jnp.sum(a * b, axis=1)
    den = jnp.linalg.norm(a, axis=1) * jnp.linalg.norm(b, axis=1) + _EPS
    return num / den


def alignment_loss(features: Sequence[jnp.ndarray], heatmaps: jnp.ndarray,
                   valid: jnp.ndarray, axis_name: Optional[str] = None) -> jnp.ndarray:
    """This device's share of R, the mean over layers of the masked (1 - cos) average.

    features: per layer (B, h, w, C); heatmaps: (B, H, W) in [0, 1];
    valid: (B,) bool/float, 1 where the heatmap counts. With `axis_name`, the
    count of valid samples is summed over the global batch, so the shares of
    all devices add up (psum) to R of the global batch. All-invalid gives 0.
    """
    valid = valid.astype(jnp.float32)
    count = jnp.sum(valid)
    if axis_name is not None:
        count = jax.lax.psum(count, axis_name)
    terms = []
    for feats in features:
        att = attention_map(feats)
        target = resize_clamped(heatmaps, att.shape[1:], antialias=True)
        terms.append(jnp.sum(valid * (1.0 - cosine(att, target))) / jnp.maximum(count, 1.0))
    return sum(terms) / len(terms)


def upsample_for_scoring(maps: jnp.ndarray, size: Tuple[int, int]) -> jnp.ndarray:
    """ATT-COS preparation: (B, h, w) -> (B, *size), bilinear, clamped, shifted to >= 0."""
    up = resize_clamped(maps, size, antialias=False)
    low = jnp.min(up, axis=(1, 2), keepdims=True)
    return jnp.where(low < 0, up - low, up)


def att_cos(features: jnp.ndarray, heatmaps: jnp.ndarray) -> jnp.ndarray:
    """Per-sample ATT-COS of one layer: (B, h, w, C), (B, H, W) -> (B,)."""
    att = upsample_for_scoring(attention_map(features), heatmaps.shape[1:])
    return cosine(att, heatmaps.astype(jnp.float32))
