"""The input pipeline alone (`python -m fer_jax.benchmark --input=records`): images/s per
CPU core with the paper's augmentation, and where a core's time goes.

- `rate`: the Grain pipeline exactly as training builds it
  (input_pipeline.train_batches with config.input.workers worker processes), its
  batches taken as fast as it yields them: images/s (per worker process: / workers).
- `profile`: the work of one worker, one stage at a time, in this process: the
  batches of the first steps of the train split, built row by row as
  input_pipeline's train map builds them (the same functions, in the same order;
  tests/test_input_benchmark.py checks the batch is the pipeline's to the bit), each
  stage timed on its own. CPU time per image (process_time) gives images/s per core,
  which depends less than wall time on other jobs sharing the machine.
Neither imports TensorFlow. Not a test: the figures depend on the machine.
"""
import dataclasses
import os
import time
from typing import Dict, Iterator, Optional, Sequence, Tuple

import ml_collections
import numpy as np

from data_prep.faces import normalise
from fer_jax import augment, datasets, input_pipeline, records

# (stage, what it does), in the order a worker runs them on one example.
STAGES: Tuple[Tuple[str, str], ...] = (
    ("read", "the record's bytes from its TFRecord file (offset index, CRC check)"),
    ("parse", "tf.train.Example parsed with protobuf, its fields to arrays"),
    ("decode image", "JPEG (libjpeg-turbo through simplejpeg) or PNG (OpenCV) to uint8 RGB"),
    ("decode heatmap", "the AU heatmap's PNG to uint8"),
    ("to float", "image and heatmap to float32 in [0, 1] at the model's size"),
    ("draws + matrix", "the 17 uniforms and the geometric transform's matrix"),
    ("warp: image", "a bilinear projective warp of the 3 image channels alone"),
    ("warp: heatmap", "what carrying the heatmap costs: the pipeline's warp of image and "
     "heatmap stacked (4 channels) minus that 3-channel warp"),
    ("photometric", "colour jitter, grayscale and random erasing of the image"),
    ("normalise", "ImageNet mean and standard deviation"),
    ("batch", "the rows stacked into the (devices, per device, ...) layout"),
)
STAGE_NAMES = tuple(name for name, _ in STAGES)


@dataclasses.dataclass
class Profile:
    """Where one core's time goes, per image."""
    ms: Dict[str, float]           # stage -> wall milliseconds per image (STAGE_NAMES)
    cpu_ms_per_image: float        # this process's CPU time per image, all stages
    images: int                    # images profiled
    last_batch: Dict[str, np.ndarray]   # the last batch built (for the test)

    @property
    def wall_ms_per_image(self) -> float:
        return float(sum(self.ms.values()))

    @property
    def images_per_s_per_core(self) -> float:
        return 1000.0 / self.cpu_ms_per_image


def profile(dataset: datasets.BuiltDataset, config: ml_collections.ConfigDict,
            shard_ids: Sequence[int], num_shards: int, steps: int) -> Profile:
    """Builds the train batches of steps 0 .. steps - 1 for devices `shard_ids` (of
    `num_shards`) stage by stage, as one Grain worker does, timing each stage."""
    train_map = input_pipeline._TrainStep(dataset, config, shard_ids, num_shards)
    source, examples = train_map.examples.source, train_map.examples
    spent = {name: 0 for name in STAGE_NAMES}
    clock = time.perf_counter_ns
    images, batch = 0, {}
    cpu0 = time.process_time()
    for step in range(steps):
        rows = []
        for position, number in train_map.rows(step):
            t0 = clock()
            serialized = source[position]
            t1 = clock()
            parsed = records.parse_example(serialized)
            t2 = clock()
            image = datasets.decode_rgb(parsed["image"][0])
            t3 = clock()
            heatmap = datasets.decode_heatmap(parsed["heatmap"][0])
            t4 = clock()
            ex = examples.to_model(datasets.decode_parsed(parsed, image, heatmap))
            t5 = clock()
            spent["read"] += t1 - t0
            spent["parse"] += t2 - t1
            spent["decode image"] += t3 - t2
            spent["decode heatmap"] += t4 - t3
            spent["to float"] += t5 - t4
            if config.input.augment:
                # augment.augment, one step at a time.
                t0 = clock()
                u = augment.uniforms(train_map.seed, number)
                m = augment.geometric_matrix(u, ex["image"].shape[0], config.input)
                t1 = clock()
                warped = augment.warp(
                    np.concatenate([ex["image"], ex["heatmap"][..., None]], axis=-1), m)
                t2 = clock()
                ex["image"] = augment.photometric(warped[..., :3], u, config.input)
                ex["heatmap"] = warped[..., 3]
                t3 = clock()
                # Not the pipeline's work: the image's share of the warp (the rest is the
                # heatmap's), outside the CPU time counted below.
                c0 = time.process_time()
                augment.warp(ex["image"], m)
                t4 = clock()
                cpu0 += time.process_time() - c0
                image_share = min(t4 - t3, t2 - t1)
                spent["draws + matrix"] += t1 - t0
                spent["warp: image"] += image_share
                spent["warp: heatmap"] += t2 - t1 - image_share
                spent["photometric"] += t3 - t2
            t0 = clock()
            ex["image"] = normalise(ex["image"])
            spent["normalise"] += clock() - t0
            rows.append(ex)
        t0 = clock()
        batch = input_pipeline._stack(rows, len(train_map.shard_ids))
        spent["batch"] += clock() - t0
        images += len(rows)
    cpu_ms = (time.process_time() - cpu0) * 1000 / images
    return Profile({k: v / 1e6 / images for k, v in spent.items()}, cpu_ms, images, batch)


def rate(batches: Iterator[Dict[str, np.ndarray]], local_batch: int, count: int) -> float:
    """Images/s that `batches` (input_pipeline.train_batches, `local_batch` images each)
    delivers to this process, taken as fast as it yields them, after two batches of
    start-up (worker processes, file opening)."""
    for _ in range(2):
        next(batches)
    t0 = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count * local_batch / (time.perf_counter() - t0)


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def table(p: Profile, image_size: int, grain_rate: Optional[float], workers: int) -> str:
    """The profile as a text table (ms/image and % of the wall time per stage)."""
    total = p.wall_ms_per_image
    lines = [f"Input pipeline, one core ({image_size} px, {p.images} images, augmentation "
             "as in training):",
             f"  {'stage':<16}{'ms/image':>10}{'%':>8}"]
    for name in STAGE_NAMES:
        lines.append(f"  {name:<16}{p.ms[name]:>10.3f}{100 * p.ms[name] / total:>8.1f}")
    lines.append(f"  {'total (wall)':<16}{total:>10.3f}{100.0:>8.1f}")
    lines.append(f"  CPU time {p.cpu_ms_per_image:.3f} ms/image: "
                 f"{p.images_per_s_per_core:.1f} images/s per core")
    if grain_rate is not None:
        per = grain_rate / max(workers, 1)
        who = (f"{workers} worker process{'es' if workers > 1 else ''}" if workers
               else "threads of one process")
        lines.append(f"Grain pipeline ({who}): {grain_rate:.1f} images/s, {per:.1f} per "
                     f"{'worker' if workers else 'process'}; {cpu_cores()} cores here, load "
                     f"average {os.getloadavg()[0]:.1f}")
    return "\n".join(lines)


def summary(p: Profile, grain_rate: Optional[float], workers: int) -> Dict[str, object]:
    """The JSON keys fer_jax.benchmark adds for the input (rounded)."""
    return {
        "input_workers": workers,
        "input_images_per_s": None if grain_rate is None else round(grain_rate, 1),
        "input_images_per_s_per_worker": (None if grain_rate is None
                                          else round(grain_rate / max(workers, 1), 1)),
        "input_images_per_s_per_core": round(p.images_per_s_per_core, 1),
        "input_cpu_ms_per_image": round(p.cpu_ms_per_image, 3),
        "input_profile_ms": {k: round(v, 4) for k, v in p.ms.items()},
        "cpu_cores": cpu_cores(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }

