"""Class activation maps (Zhou et al. 2016) over any captured (B, h, w, C) layer.

For a global-average-pooling head, logits = mean_hw(F) @ W + b, so the map of
class k is F @ W[:, k]; its spatial mean plus b_k is exactly logit k.
"""
from typing import Tuple

import jax.numpy as jnp

from fer_jax import alignment


def class_activation_map(features: jnp.ndarray, head_kernel: jnp.ndarray,
                         classes: jnp.ndarray) -> jnp.ndarray:
    """CAM of one class per sample: (B, h, w, C), (C, K), (B,) int -> (B, h, w)."""
    weights = jnp.take(head_kernel.astype(jnp.float32), classes, axis=1).T  # (B, C)
    return jnp.einsum("bhwc,bc->bhw", features.astype(jnp.float32), weights)


def min_max(maps: jnp.ndarray) -> jnp.ndarray:
    """Per-sample min-max normalisation of (B, h, w) maps to [0, 1] (flat maps -> 0)."""
    lo = jnp.min(maps, axis=(1, 2), keepdims=True)
    hi = jnp.max(maps, axis=(1, 2), keepdims=True)
    return (maps - lo) / jnp.maximum(hi - lo, 1e-12)


def upsample_cam(cams: jnp.ndarray, size: Tuple[int, int]) -> jnp.ndarray:
    """CAM for scoring and display: min-max, bilinear to `size`, clamped to [0, 1]."""
    maps = min_max(cams)
    up = alignment.resize_clamped(maps, size, antialias=False)
    return jnp.clip(up, 0.0, 1.0)


def cam_cos(cams: jnp.ndarray, heatmaps: jnp.ndarray) -> jnp.ndarray:
    """Per-sample CAM-COS (method.md): (B, h, w) CAMs, (B, H, W) AU maps -> (B,)."""
    return alignment.cosine(upsample_cam(cams, heatmaps.shape[1:]), heatmaps)
