"""TFRecords -> augmented, sharded batches for the data-parallel step (Grain; no TensorFlow).

Each process reads only its own part of a split (training: one shard per
device of the job; evaluation: the process's even part) and yields NumPy
batches laid out (local_devices, per_device_batch, ...):
  image   (.., S, S, 3) float32, ImageNet-normalised
  heatmap (.., S, S)    float32 in [0, 1] (same geometric transforms as image)
  valid   (..)          float32, 1 where the heatmap counts
  label   (..)          int32
  mask    (..)          float32, 1 for real examples, 0 for evaluation padding
Records are read at random through fer_jax.datasets (offset index per file),
decoded and augmented (fer_jax.augment) in NumPy/OpenCV, one Grain element
per batch, in `config.input.workers` processes (or threads of this one).
"""
import os
import sys
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import grain
import ml_collections
import numpy as np

from data_prep.faces import IMAGENET_MEAN, IMAGENET_STD, normalise, unit_image
from fer_jax import augment, datasets, errors

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]   # one normalisation (data_prep.faces)


def get_dataset(dataset: ml_collections.ConfigDict, build_if_missing: bool = True
                ) -> datasets.BuiltDataset:
    """The built records of config.dataset; builds synthetic_faces when missing.

    Real datasets are built when `dataset.manual_dir` is set; otherwise a
    missing one raises with the command that builds it. Building (data_prep)
    uses TensorFlow; reading a built dataset does not.
    """
    data_dir = os.path.expanduser(dataset.data_dir)
    try:
        return datasets.find(dataset.name, data_dir)
    except FileNotFoundError:
        pass
    synthetic = dataset.name.split("/")[0] == "synthetic_faces"
    if not build_if_missing or not (synthetic or dataset.manual_dir):
        raise FileNotFoundError(
            f"dataset {dataset.name!r} is not built in {data_dir}; build it with: "
            f"python -m data_prep.build --dataset={dataset.name} --data_dir={data_dir} "
            "--manual_dir=DIR (or set config.dataset.manual_dir)")
    from data_prep import build   # TensorFlow Datasets: only to write the records
    build.build_dataset(dataset.name, data_dir, manual_dir=dataset.manual_dir or None)
    return datasets.find(dataset.name, data_dir)


def denormalise(images: np.ndarray) -> np.ndarray:
    """Normalised (..., 3) images back to RGB in [0, 1] (for pictures)."""
    mean = np.array(IMAGENET_MEAN, np.float32)
    std = np.array(IMAGENET_STD, np.float32)
    return np.clip(np.asarray(images) * std + mean, 0.0, 1.0)


def num_examples(dataset: datasets.BuiltDataset, split: str) -> int:
    """Examples in `split` (all processes together)."""
    try:
        return dataset.num_examples(split)
    except KeyError as e:
        raise errors.ConfigError(e.args[0]) from None


def steps_per_epoch(dataset: datasets.BuiltDataset, config: ml_collections.ConfigDict) -> int:
    """Whole global batches in one pass over the train split (the rest is dropped)."""
    total = num_examples(dataset, config.dataset.train_split)
    if total < config.train.batch_size:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} is larger than "
                         f"the {total} examples of split {config.dataset.train_split!r}")
    return total // config.train.batch_size


class _Examples:
    """Record position -> decoded example at the model's side (no augmentation yet).

    Picklable: a worker process opens the files itself (fer_jax.records.RecordFile)."""

    def __init__(self, source: datasets.SplitSource, size: int):
        self.source, self.size = source, size

    def __call__(self, position: int) -> Dict[str, Any]:
        return self.to_model(datasets.decode(self.source[position]))

    def to_model(self, ex: Dict[str, Any]) -> Dict[str, Any]:
        """A decoded example (datasets.decode) -> image (S, S, 3) float32 in [0, 1], heatmap
        (S, S) float32 in [0, 1], valid, label and mask (1) at the model's size S."""
        # As the tf.data pipeline did: the map divided by 255 (the image multiplied by
        # float32(1/255), unit_image), resized like the image when sizes differ.
        heat = ex["heatmap"][..., None].astype(np.float32) / np.float32(255.0)
        if heat.shape[0] != self.size:
            heat = unit_image(heat, self.size)
        return {
            "image": unit_image(ex["image"], self.size),
            "heatmap": np.clip(heat[..., 0], 0.0, 1.0),
            "valid": np.float32(ex["heatmap_valid"]),
            "label": np.int32(ex["label"]),
            "mask": np.float32(1.0),
        }


def _stack(rows: List[Dict[str, Any]], num_devices: int) -> Dict[str, np.ndarray]:
    """Examples in device order -> {key: (num_devices, per_device, ...)}."""
    return {k: np.stack([r[k] for r in rows]).reshape(
        (num_devices, -1) + np.shape(rows[0][k])) for k in rows[0]}


def _shard_seed(seed: int, shard: int) -> int:
    """A 32-bit seed for Grain's shuffle of one device's shard (from train.seed and it)."""
    return int(np.random.SeedSequence([seed % 2 ** 64, shard]).generate_state(1)[0])


class _TrainStep:
    """Global step -> this process's batch of that step (a Grain map: runs in workers).

    Device d owns the records [d * m, (d + 1) * m) of the split, m = total // num_shards
    (the rest is never read). Grain's shuffle orders a device's shard anew each epoch
    (a seed made of (train.seed, d), plus the epoch); the first
    steps_per_epoch * per_device_batch records of that order are the epoch's. The
    example at place j of epoch e is augmented with the uniforms of
    (train.seed, (e * used + j) * num_shards + d), a number no other example of the
    run gets.
    """

    def __init__(self, dataset: datasets.BuiltDataset, config: ml_collections.ConfigDict,
                 shard_ids: Sequence[int], num_shards: int):
        split = config.dataset.train_split
        self.examples = _Examples(dataset.split_source(split), config.dataset.image_size)
        self.shard_ids = list(shard_ids)
        self.num_shards = num_shards
        self.per_shard_batch = config.train.batch_size // num_shards
        self.steps = steps_per_epoch(dataset, config)
        self.used = self.steps * self.per_shard_batch
        self.shard_len = num_examples(dataset, split) // num_shards
        self.seed = int(config.train.seed)
        self.input = config.input
        self.orders = [grain.MapDataset.range(d * self.shard_len, (d + 1) * self.shard_len)
                       .shuffle(seed=_shard_seed(self.seed, d)).repeat()
                       for d in self.shard_ids]

    def rows(self, step: int) -> List[Tuple[int, int]]:
        """(record position, augmentation number) of each row of `step`'s batch, in order."""
        epoch, first = divmod(step, self.steps)
        rows = []
        for d, order in zip(self.shard_ids, self.orders):
            for r in range(self.per_shard_batch):
                j = first * self.per_shard_batch + r
                rows.append((int(order[epoch * self.shard_len + j]),
                             (epoch * self.used + j) * self.num_shards + d))
        return rows

    def __call__(self, step: int) -> Dict[str, np.ndarray]:
        rows = []
        for position, number in self.rows(step):
            ex = self.examples(position)
            if self.input.augment:
                u = augment.uniforms(self.seed, number)
                ex["image"], ex["heatmap"] = augment.augment(
                    ex["image"], ex["heatmap"], u, self.input)
            ex["image"] = normalise(ex["image"])
            rows.append(ex)
        return _stack(rows, len(self.shard_ids))


def _iterate(steps: "grain.MapDataset", workers: int) -> Iterator[Dict[str, np.ndarray]]:
    """A Grain map dataset of whole batches -> their iterator, prepared `workers` processes
    ahead (each batch by one of them, in order) or by two threads of this process."""
    # Elements are whole batches: a small buffer (the default, 500, would hold 500 batches).
    ds = steps.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
    if workers:
        from absl import flags
        if not flags.FLAGS.is_parsed():
            # Grain reads its own absl flags when it starts workers; a caller without a
            # command line (a notebook, the tests) has parsed none: use their defaults.
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                         per_worker_buffer_size=2))
    return iter(ds)


def train_batches(dataset: datasets.BuiltDataset, config: ml_collections.ConfigDict,
                  shard_ids: Sequence[int], num_shards: int, start_step: int = 0
                  ) -> Iterator[Dict[str, np.ndarray]]:
    """Endless augmented batches of the train split for the devices `shard_ids`, from
    global step `start_step` on.

    The split is cut into `num_shards` equal shards (one per device of the whole
    job); device d reads shard d only, so each process reads just its devices'
    shards. What device d sees at step s is a pure function of (train.seed, s,
    d, num_shards) (see _TrainStep), whatever config.input.workers: a run resumed
    at step s continues exactly as an uninterrupted run would, and the global
    batch of a step is the same however the devices are grouped into processes.
    Batches: (len(shard_ids), train.batch_size // num_shards, ...) as the module
    docstring lists.
    """
    steps = grain.MapDataset.range(start_step, sys.maxsize).map(
        _TrainStep(dataset, config, shard_ids, num_shards))
    return _iterate(steps, int(config.input.workers))


def process_ranges(dataset: datasets.BuiltDataset, split: str) -> List[Tuple[int, int]]:
    """(first position, number of examples) of `split` that each process evaluates, in
    process order: even parts, the first total % processes of them one example longer."""
    import jax  # only for the process count
    total, parts = num_examples(dataset, split), jax.process_count()
    counts = [total // parts + (p < total % parts) for p in range(parts)]
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    return [(int(f), int(c)) for f, c in zip(firsts, counts)]


def first_example_of_process(dataset: datasets.BuiltDataset, split: str) -> int:
    """Position in `split` of the first example this process evaluates."""
    import jax  # only for the process index
    return process_ranges(dataset, split)[jax.process_index()][0]


class _EvalBatch:
    """Batch number -> the next `local_batch` examples of this process's range, padded
    with zeros (mask 0) past its end (a Grain map)."""

    def __init__(self, examples: _Examples, first: int, count: int, local_batch: int,
                 num_devices: int):
        self.examples, self.first, self.count = examples, first, count
        self.local_batch, self.num_devices = local_batch, num_devices

    def __call__(self, b: int) -> Dict[str, np.ndarray]:
        rows: List[Dict[str, Any]] = []
        for i in range(b * self.local_batch, (b + 1) * self.local_batch):
            if i < self.count:
                ex = self.examples(self.first + i)
                ex["image"] = normalise(ex["image"])
            else:
                ex = self._padding()
            rows.append(ex)
        return _stack(rows, self.num_devices)

    def _padding(self) -> Dict[str, Any]:
        size = self.examples.size
        return {"image": np.zeros((size, size, 3), np.float32),
                "heatmap": np.zeros((size, size), np.float32), "valid": np.float32(0),
                "label": np.int32(0), "mask": np.float32(0)}


def eval_batches(dataset: datasets.BuiltDataset, config: ml_collections.ConfigDict,
                 split: str, num_local_devices: int, local_batch: int
                 ) -> Tuple[Iterator[Dict[str, np.ndarray]], int]:
    """Every example of `split` exactly once, padded with mask 0 to whole batches.

    Returns (batches, number of batches); every process yields the same number.
    """
    import jax  # only for the process count
    total = num_examples(dataset, split)
    per_process = -(-total // jax.process_count())
    steps = -(-per_process // local_batch)
    first, count = process_ranges(dataset, split)[jax.process_index()]
    examples = _Examples(dataset.split_source(split), config.dataset.image_size)
    batches = grain.MapDataset.range(steps).map(
        _EvalBatch(examples, first, count, local_batch, num_local_devices))
    return _iterate(batches, int(config.input.workers)), steps
