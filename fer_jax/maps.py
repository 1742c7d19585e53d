"""Map arithmetic shared by the alignment loss, the CAM methods, the metrics and the pictures.

One copy of each operation (docs/method.md gives the formulas):
channel mean, bilinear resize clamped to the map's own range, per-sample
min-max, cosine, the ATT-COS upsampling and the CAM upsampling.
Maps are (B, h, w) float32; all functions are jittable.
"""
from typing import Tuple

import jax
import jax.numpy as jnp

COSINE_EPS = 1e-8     # cos = <a, b> / (|a| |b| + eps)
MIN_MAX_EPS = 1e-12   # a flat map normalises to 0, not NaN
_TINY = 1e-30         # inside the norm's square root: |0| = 1e-15, and its gradient 0


def channel_mean(features: jnp.ndarray) -> jnp.ndarray:
    """Layer attention: channel mean of (B, h, w, C) features -> (B, h, w) float32."""
    return jnp.mean(features.astype(jnp.float32), axis=-1)


def resize_clamped(maps: jnp.ndarray, size: Tuple[int, int], antialias: bool) -> jnp.ndarray:
    """Bilinear resize of (B, h, w) maps to (B, *size), clamped to each map's own range.

    Half-pixel centres (as cv2.INTER_LINEAR and torch's align_corners=False).
    Bilinear weights are convex, so the clamp only removes float rounding (a
    constant 0.7 map would come out up to 0.7000002): resized maps never leave
    [min, max] of the input, e.g. an AU map in [0, 1] stays in [0, 1].
    """
    maps = maps.astype(jnp.float32)
    out = jax.image.resize(maps, (maps.shape[0],) + tuple(size), method="linear",
                           antialias=antialias)
    lo = jnp.min(maps, axis=(1, 2), keepdims=True)
    hi = jnp.max(maps, axis=(1, 2), keepdims=True)
    return jnp.clip(out, lo, hi)


def min_max(maps: jnp.ndarray) -> jnp.ndarray:
    """Per-sample min-max normalisation of (B, h, w) maps to [0, 1] (flat maps -> 0).

    Clipped: the division can round the maximum to 1.0000001.
    """
    maps = maps.astype(jnp.float32)
    lo = jnp.min(maps, axis=(1, 2), keepdims=True)
    hi = jnp.max(maps, axis=(1, 2), keepdims=True)
    return jnp.clip((maps - lo) / jnp.maximum(hi - lo, MIN_MAX_EPS), 0.0, 1.0)


def cosine(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Per-sample cosine similarity of (B, h, w) maps -> (B,)."""
    a = a.reshape(a.shape[0], -1).astype(jnp.float32)
    b = b.reshape(b.shape[0], -1).astype(jnp.float32)
    num = jnp.sum(a * b, axis=1)
    den = _norm(a) * _norm(b) + COSINE_EPS
    return num / den


def _norm(x: jnp.ndarray) -> jnp.ndarray:
    """|x| per row, with a zero (not NaN) gradient at x = 0: an all-zero map (ADL drops
    every position of a layer) must not poison the alignment loss's gradient."""
    return jnp.sqrt(jnp.sum(x * x, axis=1) + _TINY)


def upsample_attention(maps: jnp.ndarray, size: Tuple[int, int]) -> jnp.ndarray:
    """ATT-COS preparation: (B, h, w) -> (B, *size), bilinear, clamped, shifted to >= 0."""
    up = resize_clamped(maps, size, antialias=False)
    low = jnp.min(up, axis=(1, 2), keepdims=True)
    return jnp.where(low < 0, up - low, up)


def upsample_cam(cams: jnp.ndarray, size: Tuple[int, int]) -> jnp.ndarray:
    """CAM for scoring and display: min-max, bilinear to `size`, clamped: (B, *size) in [0, 1]."""
    return resize_clamped(min_max(cams), size, antialias=False)
