"""TFRecords -> augmented, sharded batches for the data-parallel step.

Each host reads its own shard of a split (`tfds.split_for_jax_process`) and
yields NumPy batches laid out (local_devices, per_device_batch, ...):
  image   (.., S, S, 3) float32, ImageNet-normalised
  heatmap (.., S, S)    float32 in [0, 1] (same geometric transforms as image)
  valid   (..)          float32, 1 where the heatmap counts
  label   (..)          int32
  mask    (..)          float32, 1 for real examples, 0 for evaluation padding
TensorFlow runs on the CPU only: accelerators belong to JAX.
"""
import math
import os
from typing import Dict, Iterator, Tuple

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data_prep.faces import IMAGENET_MEAN, IMAGENET_STD  # one normalisation for train and serve
from fer_jax import config_schema


def hide_accelerators_from_tf() -> None:
    """Keeps TensorFlow off GPUs/TPUs so it never competes with JAX for memory."""
    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass  # already initialised, or no such device type: nothing to hide


def get_builder(dataset: ml_collections.ConfigDict, build_if_missing: bool = True
                ) -> tfds.core.DatasetBuilder:
    """The TFDS builder of config.dataset; builds synthetic_faces when missing.

    Real datasets are built when `dataset.manual_dir` is set; otherwise a
    missing one raises with the command that builds it.
    """
    from data_prep import build  # registers the builders with TFDS
    data_dir = os.path.expanduser(dataset.data_dir)
    builder = tfds.builder(dataset.name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    synthetic = dataset.name.split("/")[0] == "synthetic_faces"
    if not build_if_missing or not (synthetic or dataset.manual_dir):
        raise FileNotFoundError(
            f"dataset {dataset.name!r} is not built in {data_dir}; build it with: "
            f"python -m data_prep.build --dataset={dataset.name} --data_dir={data_dir} "
            "--manual_dir=DIR (or set config.dataset.manual_dir)")
    return build.build_dataset(dataset.name, data_dir, manual_dir=dataset.manual_dir or None)


def _decode(example: Dict[str, tf.Tensor], size: int) -> Dict[str, tf.Tensor]:
    image = tf.image.convert_image_dtype(example["image"], tf.float32)
    heatmap = tf.cast(example["heatmap"], tf.float32) / 255.0
    if image.shape[0] != size or image.shape[1] != size:
        image = tf.image.resize(image, (size, size), antialias=True)
        heatmap = tf.image.resize(heatmap, (size, size), antialias=True)
    return {
        "image": tf.clip_by_value(image, 0.0, 1.0),
        "heatmap": tf.clip_by_value(heatmap[..., 0], 0.0, 1.0),
        "valid": tf.cast(example["heatmap_valid"], tf.float32),
        "label": tf.cast(example["label"], tf.int32),
        "mask": tf.constant(1.0, tf.float32),
    }


def _geometric_matrix(seeds: tf.Tensor, size: int, cfg: ml_collections.ConfigDict) -> tf.Tensor:
    """3x3 map from output to input pixel coordinates: flip, resized crop, rotation.

    One transform for image and heatmap, so the map stays on the face.
    """
    s = float(size)
    u = lambda i, lo=0.0, hi=1.0: tf.random.stateless_uniform([], seeds[i], lo, hi)
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


def _photometric(image: tf.Tensor, seeds: tf.Tensor, cfg: ml_collections.ConfigDict
                 ) -> tf.Tensor:
    """Colour jitter, grayscale, random erasing: the image only, never the heatmap."""
    u = lambda i, lo=0.0, hi=1.0: tf.random.stateless_uniform([], seeds[i], lo, hi)
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


def augment(ex: Dict[str, tf.Tensor], seed: tf.Tensor, cfg: ml_collections.ConfigDict
            ) -> Dict[str, tf.Tensor]:
    """The paper's train augmentations on one decoded example (stateless in `seed`)."""
    seeds = tf.random.experimental.stateless_split(seed, num=17)
    size = ex["image"].shape[0]
    m = _geometric_matrix(seeds, size, cfg)
    transform = tf.reshape(m / m[2, 2], [-1])[:8][None]
    stacked = tf.concat([ex["image"], ex["heatmap"][..., None]], axis=-1)[None]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=stacked, transforms=transform, output_shape=[size, size],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    out = dict(ex)
    out["image"] = _photometric(warped[..., :3], seeds, cfg)
    out["heatmap"] = warped[..., 3]
    return out


def _normalise(ex: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    out = dict(ex)
    out["image"] = (ex["image"] - IMAGENET_MEAN) / IMAGENET_STD
    return out


def denormalise(images: np.ndarray) -> np.ndarray:
    """Normalised (..., 3) images back to RGB in [0, 1] (for pictures)."""
    mean = np.array(IMAGENET_MEAN, np.float32)
    std = np.array(IMAGENET_STD, np.float32)
    return np.clip(np.asarray(images) * std + mean, 0.0, 1.0)


def _device_layout(batch: Dict[str, tf.Tensor], num_devices: int) -> Dict[str, tf.Tensor]:
    return {k: tf.reshape(v, tf.concat([[num_devices, -1], tf.shape(v)[1:]], 0))
            for k, v in batch.items()}


def train_batches(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict,
                  num_local_devices: int, local_batch: int, seed: int
                  ) -> Iterator[Dict[str, np.ndarray]]:
    """Endless shuffled, augmented batches of this process's shard of the train split."""
    size = config.dataset.image_size
    split = tfds.split_for_jax_process(config.dataset.train_split, drop_remainder=True)
    read = tfds.ReadConfig(shuffle_seed=seed)
    ds = builder.as_dataset(split=split, shuffle_files=True, read_config=read)
    ds = ds.map(lambda ex: _decode(ex, size), num_parallel_calls=tf.data.AUTOTUNE)
    if config.input.cache:
        ds = ds.cache()
    ds = ds.shuffle(config.input.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().enumerate()
    if config.input.augment:
        ds = ds.map(lambda i, ex: augment(ex, tf.stack([tf.constant(seed, tf.int64), i]),
                                          config.input),
                    num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda i, ex: ex)
    ds = ds.map(_normalise, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local_batch, drop_remainder=True)
    ds = ds.map(lambda b: _device_layout(b, num_local_devices))
    return iter(tfds.as_numpy(ds.prefetch(2)))


def num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
    """Examples in `split` (all processes together)."""
    if split not in builder.info.splits:
        raise config_schema.ConfigError(f"split {split!r} is not in {builder.info.full_name}; "
                         f"valid splits: {sorted(builder.info.splits)}")
    return builder.info.splits[split].num_examples


def eval_batches(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict,
                 split: str, num_local_devices: int, local_batch: int
                 ) -> Tuple[Iterator[Dict[str, np.ndarray]], int]:
    """Every example of `split` exactly once, padded with mask 0 to whole batches.

    Returns (batches, number of batches); every process yields the same number.
    """
    import jax  # only for the process count
    size = config.dataset.image_size
    total = num_examples(builder, split)
    per_process = -(-total // jax.process_count())
    steps = -(-per_process // local_batch)
    ds = builder.as_dataset(split=tfds.split_for_jax_process(split), shuffle_files=False)
    ds = ds.map(lambda ex: _normalise(_decode(ex, size)), num_parallel_calls=tf.data.AUTOTUNE)
    pad = {k: tf.zeros(v.shape, v.dtype) for k, v in ds.element_spec.items()}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat()).take(steps * local_batch)
    ds = ds.batch(local_batch).map(lambda b: _device_layout(b, num_local_devices))
    return iter(tfds.as_numpy(ds.prefetch(2))), steps
