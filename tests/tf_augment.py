"""The train augmentations as fer_jax's tf.data pipeline made them (until the Grain
pipeline replaced it): the reference that fer_jax.augment (NumPy) is checked against.

Only the random draws changed: there each uniform was tf.random.stateless_uniform of a
split seed; here (and in fer_jax.augment) the 17 uniforms are given.
"""
import math
from typing import Dict

import ml_collections
import tensorflow as tf

from data_prep.faces import IMAGENET_MEAN


def _rescaled(uniforms: tf.Tensor):
    """u(i, lo, hi): uniform i in [lo, hi), as tf.random.stateless_uniform rescales its draw."""
    return lambda i, lo=0.0, hi=1.0: uniforms[i] * (tf.constant(hi, tf.float32)
                                                   - tf.constant(lo, tf.float32)) + lo


def _geometric_matrix(uniforms: tf.Tensor, size: int, cfg: ml_collections.ConfigDict
                      ) -> tf.Tensor:
    """3x3 map from output to input pixel coordinates: flip, resized crop, rotation.

    One transform for image and heatmap, so the map stays on the face.
    """
    s = float(size)
    u = _rescaled(uniforms)
    side = tf.sqrt(u(0, cfg.crop_scale_min, 1.0)) * s  # ratio 1 crop of that area
    ox, oy = u(1) * (s - side), u(2) * (s - side)
    k = side / s
    crop = tf.stack([[k, 0.0, ox + 0.5 * k - 0.5], [0.0, k, oy + 0.5 * k - 0.5],
                     [0.0, 0.0, 1.0]])
    angle = tf.where(u(3) < cfg.rotation_prob,
                     u(4, -cfg.rotation_deg, cfg.rotation_deg) * math.pi / 180.0, 0.0)
    c = (s - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    rot = tf.stack([[cos, -sin, c - cos * c + sin * c], [sin, cos, c - sin * c - cos * c],
                    [0.0, 0.0, 1.0]])
    flip = tf.logical_and(tf.constant(cfg.hflip), u(5) < 0.5)
    mirror = tf.where(flip, tf.constant([[-1.0, 0.0, s - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
                      tf.eye(3))
    return rot @ crop @ mirror


def _photometric(image: tf.Tensor, uniforms: tf.Tensor, cfg: ml_collections.ConfigDict
                 ) -> tf.Tensor:
    """Colour jitter, grayscale, random erasing: the image only, never the heatmap."""
    u = _rescaled(uniforms)
    b, c, sat, hue = cfg.color_jitter

    def jitter(x):
        x = x * u(7, 1.0 - b, 1.0 + b)
        mean = tf.reduce_mean(tf.image.rgb_to_grayscale(x))
        x = (x - mean) * u(8, 1.0 - c, 1.0 + c) + mean
        x = tf.clip_by_value(x, 0.0, 1.0)
        x = tf.image.adjust_saturation(x, u(9, 1.0 - sat, 1.0 + sat))
        return tf.image.adjust_hue(x, u(10, -hue, hue)) if hue > 0 else x

    image = tf.cond(u(6) < cfg.color_jitter_prob, lambda: jitter(image), lambda: image)
    image = tf.clip_by_value(image, 0.0, 1.0)
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    image = tf.where(u(11) < cfg.grayscale_prob, gray, image)
    # Random erasing (area 2-33 %, aspect 0.3-3.3) to the dataset mean colour.
    size = tf.cast(tf.shape(image)[0], tf.float32)
    area = u(12, 0.02, 0.33) * size * size
    ratio = tf.exp(u(13, math.log(0.3), math.log(1 / 0.3)))
    h = tf.minimum(tf.sqrt(area * ratio), size)
    w = tf.minimum(tf.sqrt(area / ratio), size)
    y0, x0 = u(14) * (size - h), u(15) * (size - w)
    ys = tf.range(size)[:, None]
    xs = tf.range(size)[None, :]
    box = (ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)
    box = tf.logical_and(box, u(16) < cfg.erase_prob)[..., None]
    return tf.where(box, tf.constant(IMAGENET_MEAN, tf.float32), image)


def augment_with(ex: Dict[str, tf.Tensor], uniforms: tf.Tensor, cfg: ml_collections.ConfigDict
                 ) -> Dict[str, tf.Tensor]:
    """The train augmentations of one example, given its 17 uniform draws in [0, 1)."""
    size = ex["image"].shape[0]
    m = _geometric_matrix(uniforms, size, cfg)
    transform = tf.reshape(m / m[2, 2], [-1])[:8][None]
    stacked = tf.concat([ex["image"], ex["heatmap"][..., None]], axis=-1)[None]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=stacked, transforms=transform, output_shape=[size, size],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    out = dict(ex)
    out["image"] = _photometric(warped[..., :3], uniforms, cfg)
    out["heatmap"] = warped[..., 3]
    return out
