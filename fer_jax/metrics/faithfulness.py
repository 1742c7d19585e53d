"""Faithfulness of a map: does the model really use the pixels the map ranks first?

Deletion and insertion (Petsiuk et al. 2018, RISE). Pixels are ranked by the
map, highest first. In `steps` equal steps, deletion replaces the top-ranked
pixels with the baseline (0 after normalisation: the dataset's mean colour)
and insertion starts from a blurred copy of the image (`insertion_start`) and
restores them. The target class's softmax probability is read after every step
(steps + 1 points, both ends included) and summarised by the area under the
curve (trapezoid rule over the removed/inserted fraction in [0, 1]).
Deletion AUC: lower is better (the probability falls fast). Insertion AUC:
higher is better. The curves' ends do not depend on the map (the whole image,
the baseline, the start image): they are computed once for every map; the
inner steps of all maps of a batch run in one jitted `lax.map` of forward
passes (2 x batch images each).

Evaluation scores these on a fixed random subset of the split (`subset_positions`):
the curves cost 2 (steps - 1) forwards per map and image, the rest of the
evaluation one forward and one backward per image.
"""
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

# RISE's insertion blur at 224 px: an 11-pixel Gaussian window, sigma 5; scaled with the image.
_BLUR_SIGMA_224 = 5.0
_BLUR_WINDOW_224 = 11
_SUBSET_SEED = 20240201   # fixed: every run scores the same examples of a split


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Reflects integer positions into [0, n) without repeating the edge (d c b | a b c d)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index < n, index, period - index)


def _blur_matrix(n: int, sigma: float, radius: int) -> np.ndarray:
    """(n, n) matrix of a 1-D Gaussian blur (window 2 radius + 1, mirrored edges)."""
    t = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = np.zeros((n, n), np.float64)
    for i in range(n):
        np.add.at(out[i], _mirror(i + t, n), kernel)
    return out.astype(np.float32)


def gaussian_blur(images: jnp.ndarray, sigma: float, radius: int) -> jnp.ndarray:
    """Separable Gaussian blur of (B, H, W, C) images: sigma and window radius in pixels.

    Edges are mirrored (as scipy's mode="mirror"), so the border keeps its colour;
    any radius works, also one larger than the image.
    """
    rows = jnp.asarray(_blur_matrix(images.shape[1], sigma, radius))
    cols = jnp.asarray(_blur_matrix(images.shape[2], sigma, radius))
    x = jnp.einsum("ih,bhwc->biwc", rows, images.astype(jnp.float32))
    return jnp.einsum("jw,biwc->bijc", cols, x)


def blur(images: jnp.ndarray) -> jnp.ndarray:
    """RISE's insertion blur: sigma 5 in an 11-pixel window at 224 px, scaled with the image."""
    side = images.shape[1]
    return gaussian_blur(images, _BLUR_SIGMA_224 * side / 224.0,
                         max(1, int(round(_BLUR_WINDOW_224 * side / 224.0)) // 2))


def insertion_start(images: jnp.ndarray, blur_sigma: float) -> jnp.ndarray:
    """Insertion's first image: (B, H, W, 3) normalised -> the same, blurred.

    blur_sigma: the Gaussian's sigma as a fraction of the image side, its window
    +-3 sigma; 0 = the baseline itself (the dataset's mean colour, 0 after
    normalisation); -1 = RISE's own blur (`blur`: sigma 5 in an 11 px window at 224 px).
    """
    if blur_sigma < 0:
        return blur(images)
    if blur_sigma == 0:
        return _traced_zeros(images)
    sigma = blur_sigma * images.shape[1]
    return gaussian_blur(images, sigma, max(1, int(np.ceil(3 * sigma))))


def _traced_zeros(images: jnp.ndarray) -> jnp.ndarray:
    """Zeros shaped like `images`, computed from them: with a constant instead, XLA would
    constant-fold the whole forward pass of the model over it (tens of seconds of compile)."""
    return images.astype(jnp.float32) * 0.0


def subset_positions(total: int, size: int) -> np.ndarray:
    """Sorted positions of a fixed random subset of `size` of `total` examples: the same
    on every run and process layout; every position when size is 0 or >= total."""
    if size <= 0 or size >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(_SUBSET_SEED).permutation(total)[:size])


def pixel_ranks(cam_maps: jnp.ndarray) -> jnp.ndarray:
    """(..., H, W) maps -> (..., H*W) int32 rank of each pixel, 0 = highest value.

    Ties keep row-major order (stable sort), so flat maps delete top to bottom.
    """
    flat = cam_maps.reshape(cam_maps.shape[:-2] + (-1,))
    order = jnp.argsort(-flat, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1).astype(jnp.int32)


def curves(class_probs: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
           images: jnp.ndarray, cam_maps: jnp.ndarray, classes: jnp.ndarray, steps: int,
           start: Optional[jnp.ndarray] = None, image_probs: Optional[jnp.ndarray] = None
           ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Deletion and insertion curves of M maps per image.

    class_probs: images (n, H, W, 3), classes (n,) -> (n,) target probabilities.
    images (B, H, W, 3) normalised; cam_maps (M, B, H, W); classes (B,); steps >= 1;
    start: insertion's first image (B, H, W, 3), default `blur(images)`;
    image_probs: class_probs(images, classes) when the caller has it already (B,).
    Returns (deletion, insertion), each (M, B, steps + 1) in [0, 1].
    """
    m, b, h, w = cam_maps.shape
    ranks = pixel_ranks(cam_maps).reshape(m, b, h, w, 1)
    start = blur(images) if start is None else start
    # The ends, shared by every map: the image itself, all deleted, the start image.
    ends = [_traced_zeros(images), start] + ([] if image_probs is not None else [images])
    probs = class_probs(jnp.concatenate(ends), jnp.tile(classes, len(ends))).reshape(-1, b)
    empty, first = probs[0], probs[1]
    full = image_probs if image_probs is not None else probs[2]
    both_classes = jnp.concatenate([classes, classes])

    def one(item):
        k, method = item
        done = ranks[method] < jnp.round(k * (h * w) / steps).astype(jnp.int32)   # (B, H, W, 1)
        deleted = jnp.where(done, 0.0, images)
        inserted = jnp.where(done, images, start)
        return class_probs(jnp.concatenate([deleted, inserted]), both_classes)

    inner = steps - 1
    if inner > 0:
        ks = jnp.repeat(jnp.arange(1, steps), m)
        methods = jnp.tile(jnp.arange(m), inner)
        middle = jax.lax.map(one, (ks, methods)).reshape(inner, m, 2, b)
        middle = jnp.transpose(middle, (2, 1, 3, 0))   # (2, M, B, inner)
    else:
        middle = jnp.zeros((2, m, b, 0), jnp.float32)

    def assemble(head: jnp.ndarray, body: jnp.ndarray, tail: jnp.ndarray) -> jnp.ndarray:
        return jnp.concatenate([jnp.broadcast_to(head, (m, b))[..., None], body.astype(
            jnp.float32), jnp.broadcast_to(tail, (m, b))[..., None]], axis=-1)

    return assemble(full, middle[0], empty), assemble(first, middle[1], full)


def auc(curve: jnp.ndarray) -> jnp.ndarray:
    """Trapezoid area of (..., steps + 1) curves sampled evenly on [0, 1] -> (...)."""
    steps = curve.shape[-1] - 1
    inner = jnp.sum(curve, axis=-1) - 0.5 * (curve[..., 0] + curve[..., -1])
    return inner / steps
