"""`python -m fer_jax.benchmark --config=...`: cost of the AU alignment loss per step.
`python -m fer_jax.benchmark --cams`: CAM methods against pytorch-grad-cam (fer_jax.cam_benchmark).
`python -m fer_jax.benchmark --predict`: photos/s and memory of fer_jax.predict (predict_benchmark).

Times the compiled data-parallel train step of the configured model with the
alignment loss (config.align.weight, or 1 if it is 0) and without it (weight 0:
no layer captured), interleaved in the same run on the same random batch.
Prints a JSON object as its last line:
  {"step_ms_align": .., "step_ms_no_align": .., "overhead": align/no_align, ...}
"""
import functools
import json
import time

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (see configs/).")
flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
flags.DEFINE_integer("repeats", 5, "Alternating measurements of each variant (median kept).")
flags.DEFINE_integer("num_classes", 7, "Classes of the classifier head.")
flags.DEFINE_boolean("cams", False, "Time every CAM method against pytorch-grad-cam instead.")
flags.DEFINE_string("cam_model", "resnet50", "--cams: timm/fer_jax model (random weights).")
flags.DEFINE_integer("cam_size", 112, "--cams: image size.")
flags.DEFINE_integer("cam_batch", 16, "--cams: batch size.")
flags.DEFINE_boolean("predict", False, "Time fer_jax.predict on a folder of photos instead.")
flags.DEFINE_integer("predict_photos", 200, "--predict: photos in the small folder (large: 4x).")


def measure(config, steps: int, repeats: int, num_classes: int) -> dict:
    """Median milliseconds per train step with and without alignment."""
    from fer_jax import config_schema, data_parallel, models, optim, train
    config_schema.validate(config)
    dp = data_parallel.DataParallel(spmd=config.spmd)
    model = models.create_model(config.model, num_classes, bn_axis_name=data_parallel.AXIS)
    tx = optim.create_optimizer(config, optim.learning_rate_schedule(config, 100, 1000))
    state = train.create_train_state(model, config, tx, jax.random.key(0))
    size, n = config.dataset.image_size, config.train.batch_size
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
        "heatmap": rng.uniform(size=(n, size, size)).astype(np.float32),
        "valid": np.ones(n, np.float32),
        "label": rng.integers(0, num_classes, n).astype(np.int32),
        "mask": np.ones(n, np.float32),
    }
    batch = dp.shard({k: v.reshape((dp.num_local_devices, -1) + v.shape[1:])
                      for k, v in batch.items()})
    weight = float(config.align.weight) or 1.0
    variants = {"align": weight, "no_align": 0.0}
    steps_fn = {name: dp.wrap(functools.partial(
        train.train_step, align_layers=tuple(config.align.layers), align_weight=w))
        for name, w in variants.items()}
    states = {name: dp.replicate(state) for name in variants}
    for name, fn in steps_fn.items():  # compile and warm up
        for _ in range(2):
            states[name], m = fn(states[name], batch)
        jax.block_until_ready(m)
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in steps_fn.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                states[name], m = fn(states[name], batch)
            jax.block_until_ready((states[name], m))
            times[name].append((time.perf_counter() - t0) / steps * 1000)
    a, b = float(np.median(times["align"])), float(np.median(times["no_align"]))
    return {
        "model": config.model.name, "image_size": size, "global_batch": n,
        "align_layers": list(config.align.layers), "devices": dp.num_devices,
        "backend": "shard_map" if config.spmd else "pmap", "platform": jax.default_backend(),
        "steps": steps, "repeats": repeats,
        "step_ms_align": round(a, 3), "step_ms_no_align": round(b, 3),
        "overhead": round(a / b, 4),
    }


def main(argv):
    del argv
    if FLAGS.cams:
        from fer_jax import cam_benchmark
        print(json.dumps(cam_benchmark.measure(FLAGS.cam_model, FLAGS.cam_size, FLAGS.cam_batch,
                                               repeats=FLAGS.repeats)))
        return
    if FLAGS.predict:
        from fer_jax import predict_benchmark
        print(json.dumps(predict_benchmark.measure(FLAGS.predict_photos)))
        return
    if FLAGS.config is None:
        raise app.UsageError("--config is required (or --cams)")
    from fer_jax import input_pipeline
    input_pipeline.hide_accelerators_from_tf()
    print(json.dumps(measure(FLAGS.config, FLAGS.steps, FLAGS.repeats, FLAGS.num_classes)))


if __name__ == "__main__":
    app.run(main)
