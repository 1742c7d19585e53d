"""TFRecords -> augmented, sharded batches for the data-parallel step.

Each process reads only its own part of a split (training: one shard per
device of the job; evaluation: `tfds.split_for_jax_process`) and yields NumPy
batches laid out (local_devices, per_device_batch, ...):
  image   (.., S, S, 3) float32, ImageNet-normalised
  heatmap (.., S, S)    float32 in [0, 1] (same geometric transforms as image)
  valid   (..)          float32, 1 where the heatmap counts
  label   (..)          int32
  mask    (..)          float32, 1 for real examples, 0 for evaluation padding
TensorFlow runs on the CPU only: accelerators belong to JAX.
"""
import math
import os
from typing import Dict, Iterator, List, Sequence, Tuple

import ml_collections
import numpy as np

# Before TensorFlow loads: its C++ start-up notices (oneDNN, CPU kernels) are not the
# user's to act on, and its oneDNN kernels log an error-level line for every int32 op
# on CPUs without AVX-512 (then fall back to Eigen, as with the option off).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from data_prep.faces import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402  (one normalisation)
from fer_jax import errors  # noqa: E402


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
    # The builder makes its (empty) version folder, and is_prepared() then warns
    # "Variant folder ... has no dataset_info.json" on every first build: ask the
    # folder first.
    if (os.path.isfile(os.path.join(builder.data_dir, "dataset_info.json"))
            and builder.is_prepared()):
        return builder
    synthetic = dataset.name.split("/")[0] == "synthetic_faces"
    if not build_if_missing or not (synthetic or dataset.manual_dir):
        raise FileNotFoundError(
            f"dataset {dataset.name!r} is not built in {data_dir}; build it with: "
            f"python -m data_prep.build --dataset={dataset.name} --data_dir={data_dir} "
            "--manual_dir=DIR (or set config.dataset.manual_dir)")
    return build.build_dataset(dataset.name, data_dir, manual_dir=dataset.manual_dir or None)


_TRAIN_KEYS = ("image", "heatmap", "heatmap_valid", "label")


def _decode_images(example: Dict[str, tf.Tensor], features: tfds.features.FeaturesDict
                   ) -> Dict[str, tf.Tensor]:
    """Encoded image and heatmap bytes (read with SkipDecoding) -> uint8 pixels."""
    out = dict(example)
    for key in ("image", "heatmap"):
        if example[key].dtype == tf.string:
            out[key] = features[key].decode_example(example[key])
    return out


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


def augment(ex: Dict[str, tf.Tensor], seed: tf.Tensor, cfg: ml_collections.ConfigDict
            ) -> Dict[str, tf.Tensor]:
    """The paper's train augmentations on one decoded example (stateless in `seed`)."""
    seeds = tf.random.experimental.stateless_split(seed, num=17)
    uniforms = tf.stack([tf.random.stateless_uniform([], seeds[i]) for i in range(17)])
    return augment_with(ex, uniforms, cfg)


def augment_with(ex: Dict[str, tf.Tensor], uniforms: tf.Tensor, cfg: ml_collections.ConfigDict
                 ) -> Dict[str, tf.Tensor]:
    """`augment` with its 17 uniform draws in [0, 1) given (fer_jax.augment's reference)."""
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


def steps_per_epoch(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict
                    ) -> int:
    """Whole global batches in one pass over the train split (the rest is dropped)."""
    total = num_examples(builder, config.dataset.train_split)
    if total < config.train.batch_size:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} is larger than "
                         f"the {total} examples of split {config.dataset.train_split!r}")
    return total // config.train.batch_size


def train_batches(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict,
                  shard_ids: Sequence[int], num_shards: int, start_step: int = 0
                  ) -> Iterator[Dict[str, np.ndarray]]:
    """Endless augmented batches of the train split for the devices `shard_ids`, from
    global step `start_step` on.

    The split is cut into `num_shards` equal shards (one per device of the whole
    job); device d reads shard d only, so each process reads just its devices'
    shards. What device d sees at step s is a pure function of (train.seed, s,
    d, num_shards): epoch e = s // steps_per_epoch is shard d shuffled with a seed
    made of (seed, e, d), each example augmented with a seed made of (seed, d,
    its place in the stream). So a run resumed at step s continues exactly as an
    uninterrupted run would, and the global batch of a step is the same however
    the devices are grouped into processes.
    Batches: (len(shard_ids), train.batch_size // num_shards, ...) as the module
    docstring lists.
    """
    size = config.dataset.image_size
    features = builder.info.features
    per_shard_batch = config.train.batch_size // num_shards
    steps = steps_per_epoch(builder, config)
    used = steps * per_shard_batch  # examples of a shard one epoch uses, the rest dropped
    first_epoch, first_batch = divmod(start_step, steps)
    seed = config.train.seed
    splits = tfds.even_splits(config.dataset.train_split, num_shards, drop_remainder=True)
    # Without a cache the shuffle buffer holds encoded bytes and only examples
    # that are used get decoded (a resume skips the start of an epoch cheaply).
    skip = {} if config.input.cache else {
        "image": tfds.decode.SkipDecoding(), "heatmap": tfds.decode.SkipDecoding()}

    def shard_stream(d: int) -> tf.data.Dataset:
        source = builder.as_dataset(split=splits[d], shuffle_files=False, decoders=skip)
        source = source.map(lambda ex: {k: ex[k] for k in _TRAIN_KEYS})
        if config.input.cache:
            source = source.map(lambda ex: _decode(ex, size),
                                num_parallel_calls=tf.data.AUTOTUNE).cache()

        def epoch(e):
            order_seed = tf.random.stateless_uniform(
                [], tf.stack([tf.constant(seed, tf.int64), e * num_shards + d]),
                minval=0, maxval=2 ** 62, dtype=tf.int64)
            start = tf.where(e == first_epoch, tf.constant(first_batch * per_shard_batch, tf.int64),
                             tf.constant(0, tf.int64))
            # enumerate + filter (not skip/take) reads the whole shard, so a cache completes.
            # Each example keeps a number unique to (device, place in the stream): its
            # augmentation seed.
            return (source.shuffle(config.input.shuffle_buffer, seed=order_seed)
                    .enumerate().filter(lambda j, ex: (j >= start) & (j < used))
                    .map(lambda j, ex: ((e * used + j) * num_shards + d, ex)))

        return tf.data.Dataset.range(first_epoch, 2 ** 62).flat_map(epoch)

    def prepare(number, ex):
        if not config.input.cache:
            ex = _decode(_decode_images(ex, features), size)
        if config.input.augment:
            ex = augment(ex, tf.stack([tf.constant(seed, tf.int64), number]), config.input)
        return _normalise(ex)

    # Interleave the local shards example by example, so that the per-example work
    # is one tf.data function (traced once, whatever the number of devices).
    ds = tf.data.Dataset.zip(tuple(shard_stream(d) for d in shard_ids))
    ds = ds.map(lambda *parts: tf.nest.map_structure(lambda *x: tf.stack(x), *parts)).unbatch()
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    n = len(shard_ids)
    ds = ds.batch(n * per_shard_batch, drop_remainder=True)
    # Rows come (example 0 of each device, example 1 of each device, ...): regroup per device.
    ds = ds.map(lambda b: {k: tf.transpose(
        tf.reshape(v, [per_shard_batch, n] + v.shape[1:].as_list()),
        [1, 0] + list(range(2, v.shape.rank + 1))) for k, v in b.items()})
    return iter(tfds.as_numpy(ds.prefetch(2)))


def num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
    """Examples in `split` (all processes together)."""
    if split not in builder.info.splits:
        raise errors.ConfigError(f"split {split!r} is not in {builder.info.full_name}; "
                         f"valid splits: {sorted(builder.info.splits)}")
    return builder.info.splits[split].num_examples


def process_ranges(builder: tfds.core.DatasetBuilder, split: str) -> List[Tuple[int, int]]:
    """(first position, number of examples) of `split` that each process evaluates, in
    process order (eval_batches reads `tfds.split_for_jax_process`: the split's even parts)."""
    import jax  # only for the process count
    counts = [builder.info.splits[p].num_examples
              for p in tfds.even_splits(split, n=jax.process_count())]
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    return [(int(f), int(c)) for f, c in zip(firsts, counts)]


def first_example_of_process(builder: tfds.core.DatasetBuilder, split: str) -> int:
    """Position in `split` of the first example this process evaluates."""
    import jax  # only for the process index
    return process_ranges(builder, split)[jax.process_index()][0]


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
    # No TFDS auto-cache: the split is read once, and a reader that stops early (the
    # pictures' one batch) would make TensorFlow warn that it dropped a partial cache.
    ds = builder.as_dataset(split=tfds.split_for_jax_process(split), shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False))
    ds = ds.map(lambda ex: _normalise(_decode(ex, size)), num_parallel_calls=tf.data.AUTOTUNE)
    pad = {k: tf.zeros(v.shape, v.dtype) for k, v in ds.element_spec.items()}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat()).take(steps * local_batch)
    ds = ds.batch(local_batch).map(lambda b: _device_layout(b, num_local_devices))
    return iter(tfds.as_numpy(ds.prefetch(2))), steps
