"""The paper's train augmentations of one example, in NumPy (no TensorFlow).

One geometric transform (random resized crop, rotation, horizontal flip) moves
the image and its AU heatmap together, so the map stays on the face; colour
jitter, grayscale and random erasing touch the image only. The arithmetic is
that of the TensorFlow ops the pipeline used before (ImageProjectiveTransformV3
with bilinear sampling and zero fill, rgb_to_grayscale), in float32 and in the same
order; saturation and hue (TF's AdjustSaturation, AdjustHue) go through OpenCV's HSV
conversion instead, within 1e-6 of them. So both agree to float rounding
(tests/test_augment.py). Every random choice is one of 17 uniforms drawn from
(seed, number): the augmentation of an example is a pure function of them.
"""
import math
from typing import Tuple

import cv2
import ml_collections
import numpy as np

from data_prep.faces import IMAGENET_MEAN

NUM_UNIFORMS = 17
_F = np.float32


def uniforms(seed: int, number: int) -> np.ndarray:
    """(17,) float32 in [0, 1): the random draws of example `number` of a run seeded `seed`."""
    rng = np.random.default_rng([seed % 2 ** 64, number % 2 ** 64])
    return rng.random(NUM_UNIFORMS, dtype=np.float32)


def _between(u: np.ndarray, i: int, lo: float = 0.0, hi: float = 1.0) -> np.float32:
    """Uniform i rescaled to [lo, hi) as tf.random.stateless_uniform does: u * (hi - lo) + lo."""
    return _F(u[i] * (_F(hi) - _F(lo)) + _F(lo))


def geometric_matrix(u: np.ndarray, size: int, cfg: ml_collections.ConfigDict) -> np.ndarray:
    """(3, 3) float32 map from output to input pixel coordinates: flip, resized crop, rotation.

    Crop: a square of area fraction in [crop_scale_min, 1] at a uniform place;
    rotation: with probability rotation_prob, an angle in +-rotation_deg about the
    centre; flip: with probability 0.5 when hflip.
    """
    s = _F(size)
    side = np.sqrt(_between(u, 0, cfg.crop_scale_min, 1.0)) * s   # ratio 1 crop of that area
    ox, oy = u[1] * (s - side), u[2] * (s - side)
    k = side / s
    crop = np.array([[k, 0.0, ox + _F(0.5) * k - _F(0.5)],
                     [0.0, k, oy + _F(0.5) * k - _F(0.5)], [0.0, 0.0, 1.0]], _F)
    angle = (_between(u, 4, -cfg.rotation_deg, cfg.rotation_deg) * _F(math.pi) / _F(180.0)
             if u[3] < _F(cfg.rotation_prob) else _F(0.0))
    c = _F((size - 1.0) / 2.0)
    cos, sin = np.cos(angle, dtype=_F), np.sin(angle, dtype=_F)
    rot = np.array([[cos, -sin, c - cos * c + sin * c], [sin, cos, c - sin * c - cos * c],
                    [0.0, 0.0, 1.0]], _F)
    flip = bool(cfg.hflip) and u[5] < _F(0.5)
    mirror = (np.array([[-1.0, 0.0, s - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], _F) if flip
              else np.eye(3, dtype=_F))
    return (rot @ crop @ mirror).astype(_F)


def warp(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Bilinear projective warp with zero fill, as TensorFlow's ImageProjectiveTransformV3.

    Args:
      image: (H, W, C) float32.
      m: (3, 3) map from output to input pixel coordinates.
    Returns:
      (H, W, C) float32: output pixel (x, y) samples the input at m @ (x, y, 1)
      (divided by its third coordinate), bilinearly, reading 0 for neighbours
      outside the image (so a sample within one pixel of the edge is blended with 0).
    """
    image = np.asarray(image, _F)
    h, w, _ = image.shape
    t = (m / m[2, 2]).astype(_F).reshape(-1)
    ys, xs = np.meshgrid(np.arange(h, dtype=_F), np.arange(w, dtype=_F), indexing="ij")
    projection = t[6] * xs + t[7] * ys + _F(1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (t[0] * xs + t[1] * ys + t[2]) / projection
        y = (t[3] * xs + t[4] * ys + t[5]) / projection
    # Beyond one pixel past the edge every neighbour is fill: the sample is 0.
    near = (x >= -1) & (x <= w) & (y >= -1) & (y <= h) & (projection != 0)
    x, y = np.where(near, x, _F(0.0)), np.where(near, y, _F(0.0))
    x0, y0 = np.floor(x), np.floor(y)
    # Zeros around the image (1 before, 2 after): neighbours from -1 to W + 1 read 0.
    # Gathering rows of the flattened image by one index is 1.5x faster than 2-D indexing.
    padded = np.pad(image, ((1, 2), (1, 2), (0, 0))).reshape(-1, image.shape[2])
    row = w + 3
    top_left = (y0.astype(np.intp) + 1) * row + x0.astype(np.intp) + 1
    wx1, wy1 = (x - x0)[..., None], (y - y0)[..., None]
    wx0, wy0 = _F(1.0) - wx1, _F(1.0) - wy1
    top = wx0 * padded.take(top_left, axis=0) + wx1 * padded.take(top_left + 1, axis=0)
    bottom = (wx0 * padded.take(top_left + row, axis=0)
              + wx1 * padded.take(top_left + row + 1, axis=0))
    out = wy0 * top + wy1 * bottom
    return np.where(near[..., None], out, _F(0.0)).astype(_F)


def grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) luma with tf.image.rgb_to_grayscale's weights."""
    weights = np.array([0.2989, 0.5870, 0.1140], _F)
    return (image[..., 0] * weights[0] + image[..., 1] * weights[1]
            + image[..., 2] * weights[2]).astype(_F)


def adjust_saturation_and_hue(image: np.ndarray, scale: "float | np.floating",
                              delta: "float | np.floating") -> np.ndarray:
    """TensorFlow's AdjustSaturation then AdjustHue, in one HSV round trip through OpenCV:
    saturation times `scale` clipped to [0, 1], hue turned by `delta` of the colour circle,
    value kept.

    Args:
      image: (H, W, 3) float32 RGB in [0, 1].
      scale: saturation factor >= 0; delta: hue shift in [-0.5, 0.5].
    Returns:
      (H, W, 3) float32 in [0, 1], within 1e-6 of TF's two kernels on every ordering of
      (r, g, b), ties and greys (tests/test_augment.py); about 18x faster than their
      transcription into NumPy that it replaces (0.65 against 11.8 ms at 224 px).
    """
    hsv = cv2.cvtColor(np.ascontiguousarray(image, _F), cv2.COLOR_RGB2HSV)  # hue in degrees
    hue, saturation, value = cv2.split(hsv)
    saturation = np.clip(saturation * _F(scale), _F(0.0), _F(1.0))
    hue = np.mod(hue + _F(delta) * _F(360.0), _F(360.0))
    hue = np.where(hue >= _F(360.0), _F(0.0), hue)   # float32 mod can round up to 360
    return cv2.cvtColor(cv2.merge([hue, saturation, value]), cv2.COLOR_HSV2RGB)


def photometric(image: np.ndarray, u: np.ndarray, cfg: ml_collections.ConfigDict) -> np.ndarray:
    """Colour jitter, grayscale, random erasing of a (S, S, 3) float32 [0, 1] image."""
    image = np.asarray(image, _F)
    b, c, sat, hue = cfg.color_jitter
    if u[6] < _F(cfg.color_jitter_prob):
        x = image * _between(u, 7, 1.0 - b, 1.0 + b)
        mean = np.mean(grayscale(x), dtype=_F)
        x = (x - mean) * _between(u, 8, 1.0 - c, 1.0 + c) + mean
        image = adjust_saturation_and_hue(np.clip(x, 0.0, 1.0),
                                          _between(u, 9, 1.0 - sat, 1.0 + sat),
                                          _between(u, 10, -hue, hue) if hue > 0 else 0.0)
    image = np.clip(image, _F(0.0), _F(1.0))
    if u[11] < _F(cfg.grayscale_prob):
        image = np.repeat(grayscale(image)[..., None], 3, axis=-1)
    # Random erasing (area 2-33 %, aspect 0.3-3.3) to the dataset mean colour.
    size = _F(image.shape[0])
    area = _between(u, 12, 0.02, 0.33) * size * size
    ratio = np.exp(_between(u, 13, math.log(0.3), math.log(1 / 0.3)), dtype=_F)
    h = np.minimum(np.sqrt(area * ratio, dtype=_F), size)
    w = np.minimum(np.sqrt(area / ratio, dtype=_F), size)
    y0, x0 = u[14] * (size - h), u[15] * (size - w)
    if u[16] < _F(cfg.erase_prob):
        ys = np.arange(image.shape[0], dtype=_F)[:, None]
        xs = np.arange(image.shape[1], dtype=_F)[None, :]
        box = (ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)
        image = np.where(box[..., None], np.array(IMAGENET_MEAN, _F), image)
    return image.astype(_F)


def augment(image: np.ndarray, heatmap: np.ndarray, u: np.ndarray,
            cfg: ml_collections.ConfigDict) -> Tuple[np.ndarray, np.ndarray]:
    """The paper's train augmentations of one example.

    Args:
      image: (S, S, 3) float32 in [0, 1].
      heatmap: (S, S) float32 in [0, 1].
      u: (17,) float32 uniforms in [0, 1) (`uniforms(seed, number)`).
      cfg: config.input (rotation_deg, rotation_prob, crop_scale_min, hflip,
        color_jitter, color_jitter_prob, grayscale_prob, erase_prob).
    Returns:
      (image (S, S, 3), heatmap (S, S)) float32: both warped by one transform, then
      the image jittered, greyed and erased.
    """
    m = geometric_matrix(u, image.shape[0], cfg)
    warped = warp(np.concatenate([image, heatmap[..., None]], axis=-1), m)
    return photometric(warped[..., :3], u, cfg), warped[..., 3]
