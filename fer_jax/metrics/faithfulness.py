"""Faithfulness of a map: does the model really use the pixels the map ranks first?

Deletion and insertion (Petsiuk et al. 2018, RISE). Pixels are ranked by the
map, highest first. In `steps` equal steps, deletion replaces the top-ranked
pixels with the baseline (0 after normalisation: the dataset's mean colour)
and insertion starts from a blurred copy of the image and restores them. The
target class's softmax probability is read after every step (steps + 1
points, both ends included) and summarised by the area under the curve
(trapezoid rule over the removed/inserted fraction in [0, 1]).
Deletion AUC: lower is better (the probability falls fast). Insertion AUC:
higher is better. All steps of all maps of a batch run in one jitted
`lax.map` of forward passes (2 x batch images each).
"""
from typing import Callable, Tuple

import jax
import jax.numpy as jnp

# RISE's insertion blur at 224 px: an 11-pixel Gaussian window, sigma 5; scaled with the image.
_BLUR_SIGMA_224 = 5.0
_BLUR_WINDOW_224 = 11


def blur(images: jnp.ndarray) -> jnp.ndarray:
    """Separable Gaussian blur of (B, H, W, 3) images, sigma and window scaled from 224 px.

    Edges are padded by reflection, so the border keeps its colour.
    """
    side = images.shape[1]
    sigma = _BLUR_SIGMA_224 * side / 224.0
    half = max(1, int(round(_BLUR_WINDOW_224 * side / 224.0)) // 2)
    t = jnp.arange(-half, half + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / jnp.sum(kernel)
    x = jnp.pad(images.astype(jnp.float32), ((0, 0), (half, half), (half, half), (0, 0)),
                mode="reflect")
    x = sum(kernel[i] * x[:, i:i + side] for i in range(2 * half + 1))
    width = images.shape[2]
    return sum(kernel[i] * x[:, :, i:i + width] for i in range(2 * half + 1))


def pixel_ranks(cam_maps: jnp.ndarray) -> jnp.ndarray:
    """(..., H, W) maps -> (..., H*W) int32 rank of each pixel, 0 = highest value.

    Ties keep row-major order (stable sort), so flat maps delete top to bottom.
    """
    flat = cam_maps.reshape(cam_maps.shape[:-2] + (-1,))
    order = jnp.argsort(-flat, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1).astype(jnp.int32)


def curves(class_probs: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
           images: jnp.ndarray, cam_maps: jnp.ndarray, classes: jnp.ndarray, steps: int
           ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Deletion and insertion curves of M maps per image.

    class_probs: images (n, H, W, 3), classes (n,) -> (n,) target probabilities.
    images (B, H, W, 3) normalised; cam_maps (M, B, H, W); classes (B,).
    Returns (deletion, insertion), each (M, B, steps + 1) in [0, 1].
    """
    m, b, h, w = cam_maps.shape
    ranks = pixel_ranks(cam_maps).reshape(m, b, h, w, 1)
    blurred = blur(images)
    both_classes = jnp.concatenate([classes, classes])

    def one(item):
        k, method = item
        done = ranks[method] < jnp.round(k * (h * w) / steps).astype(jnp.int32)   # (B, H, W, 1)
        deleted = jnp.where(done, 0.0, images)
        inserted = jnp.where(done, images, blurred)
        return class_probs(jnp.concatenate([deleted, inserted]), both_classes)

    ks = jnp.repeat(jnp.arange(steps + 1), m)
    methods = jnp.tile(jnp.arange(m), steps + 1)
    probs = jax.lax.map(one, (ks, methods)).reshape(steps + 1, m, 2, b)
    probs = jnp.transpose(probs, (2, 1, 3, 0))   # (2, M, B, steps + 1)
    return probs[0], probs[1]


def auc(curve: jnp.ndarray) -> jnp.ndarray:
    """Trapezoid area of (..., steps + 1) curves sampled evenly on [0, 1] -> (...)."""
    steps = curve.shape[-1] - 1
    inner = jnp.sum(curve, axis=-1) - 0.5 * (curve[..., 0] + curve[..., -1])
    return inner / steps
