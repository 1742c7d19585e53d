"""`python -m fer_jax.benchmark --config=...`: training throughput and the cost of the AU loss.
`python -m fer_jax.benchmark --cams`: CAM methods against pytorch-grad-cam (fer_jax.cam_benchmark).
`python -m fer_jax.benchmark --predict`: photos/s and memory of fer_jax.predict (predict_benchmark);
  with `--reference=fer`, the shipped model beside the `fer` package on the same photos;
  with `--predict_video=N`, frames/s of `predict --video` on a generated clip.

Times the training step with the alignment loss (config.align.weight, or 1 if
it is 0) and without it (weight 0: no layer captured), interleaved in one run,
median of `--repeats` measurements of `--steps` steps each.
- `--input=synthetic` (default): one random batch, resident on the devices, for
  every step: the compiled data-parallel train step of fer_jax alone.
- `--input=records`: batches of config.dataset from the real input pipeline,
  host-to-device copies included, as the trainer runs; first measures the input
  pipeline alone (fer_jax.input_benchmark): `input_images_per_s` from Grain with
  config.input.workers processes (below the training rate, the input is the
  bottleneck), and a profile of one core's work per image, stage by stage (printed as
  a table before the JSON line): images/s per core. `--input_only` stops there (no
  model: the step keys are null). `--records_demo=N` first builds
  image_folder/faces<image_size> records of N generated faces (data_prep.benchmark,
  in a subprocess: TensorFlow stays out of this one) in `--records_dir` (kept there,
  reused) or a temporary folder, and reads them.
- `--reference=pytorch`: the paper's setting in PyTorch on the same device,
  batch and image size (timm model, forward hook on the aligned layer, the
  cosine loss of fer_jax/alignment.py, AMP autocast when config.model.dtype is
  bfloat16, channels_last, SGD nesterov), random batch on the device.
Prints one JSON object as its last line, with the same keys in every mode, so
that a speed-up is one division:
  framework, model, image_size, global_batch, dtype, align_layers, align_weight,
  devices, platform, device_kind, backend, input, steps, repeats,
  step_ms_align, step_ms_no_align, images_per_s_align, images_per_s_no_align,
  overhead (align / no_align step time), memory_bytes_in_use, peak_memory_bytes
  (first device; null where the platform does not report it), and for records (else
  null) input_workers, input_images_per_s, input_images_per_s_per_worker,
  input_images_per_s_per_core, input_cpu_ms_per_image, input_profile_ms (stage ->
  ms/image), cpu_cores, load_average_1min.
No mode imports TensorFlow.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

from absl import app, flags
import numpy as np
from ml_collections import config_flags

FLAGS = flags.FLAGS


def interleaved(variants: Dict[str, Callable[[int], None]], steps: int, repeats: int
                ) -> Dict[str, float]:
    """Median milliseconds per step of each variant.

    variants: name -> run(k), which runs k steps and returns once they are done.
    Each is warmed up (compiled) first; then they alternate, `repeats` times.
    """
    for run in variants.values():
        run(2)
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            t0 = time.perf_counter()
            run(steps)
            times[name].append((time.perf_counter() - t0) / steps * 1000)
    return {name: float(np.median(t)) for name, t in times.items()}


INPUT_KEYS = ("input_workers", "input_images_per_s", "input_images_per_s_per_worker",
              "input_images_per_s_per_core", "input_cpu_ms_per_image", "input_profile_ms",
              "cpu_cores", "load_average_1min")


def report(common: Dict[str, Any], ms: Optional[Dict[str, float]], global_batch: int,
           memory: Dict[str, Optional[int]], input_figures: Optional[Dict[str, Any]]
           ) -> Dict[str, Any]:
    """The JSON object every mode prints (ms None: no step timed, --input_only)."""
    steps: Dict[str, Any] = dict.fromkeys(
        ("step_ms_align", "step_ms_no_align", "images_per_s_align", "images_per_s_no_align",
         "overhead"))
    if ms is not None:
        a, b = ms["align"], ms["no_align"]
        steps = {"step_ms_align": round(a, 3), "step_ms_no_align": round(b, 3),
                 "images_per_s_align": round(global_batch / a * 1000, 1),
                 "images_per_s_no_align": round(global_batch / b * 1000, 1),
                 "overhead": round(a / b, 4)}
    return {**common, "global_batch": global_batch, **steps, **memory,
            **{k: (input_figures or {}).get(k) for k in INPUT_KEYS}}


def _common(config, framework: str, devices: int, platform: str, device_kind: str,
            backend: str, input_kind: str, steps: int, repeats: int) -> Dict[str, Any]:
    return {
        "framework": framework, "model": config.model.name,
        "image_size": config.dataset.image_size, "dtype": config.model.dtype,
        "align_layers": list(config.align.layers),
        "align_weight": float(config.align.weight) or 1.0, "devices": devices,
        "platform": platform, "device_kind": device_kind, "backend": backend,
        "input": input_kind, "steps": steps, "repeats": repeats,
    }


def measure(config, steps: int, repeats: int, num_classes: int, input_kind: str = "synthetic",
            input_batches: int = 50, profile_steps: int = 2, input_only: bool = False
            ) -> Dict[str, Any]:
    """fer_jax: the train step with and without alignment (see the module docstring)."""
    import jax
    from fer_jax import config_schema, data_parallel, models, optim, train
    config_schema.validate(config)
    dp = data_parallel.DataParallel(spmd=config.spmd)
    size, n = config.dataset.image_size, config.train.batch_size
    input_figures = None
    if input_kind == "records":
        from fer_jax import input_benchmark, input_pipeline
        dataset = input_pipeline.get_dataset(config.dataset)
        num_classes = len(dataset.class_names)
        # One core's work first, before the worker processes take the cores.
        profile = input_benchmark.profile(dataset, config, dp.shard_ids, dp.num_devices,
                                          profile_steps)
        batches = input_pipeline.train_batches(dataset, config, dp.shard_ids, dp.num_devices)
        input_rate = input_benchmark.rate(batches, n // jax.process_count(), input_batches)
        workers = int(config.input.workers)
        print(input_benchmark.table(profile, size, input_rate, workers), flush=True)
        input_figures = input_benchmark.summary(profile, input_rate, workers)
        next_batch = lambda: dp.shard(next(batches))  # noqa: E731
    if input_only:
        device = jax.local_devices()[0]
        common = _common(config, "fer_jax", dp.num_devices, jax.default_backend(),
                         device.device_kind, "shard_map" if config.spmd else "pmap", input_kind,
                         0, 0)
        return report(common, None, n, {"memory_bytes_in_use": None,
                                        "peak_memory_bytes": None}, input_figures)
    if input_kind != "records":
        batch = dp.shard(_random_batch(n, size, num_classes, dp.num_local_devices))
        next_batch = lambda: batch  # noqa: E731
    model = models.create_model(config.model, num_classes, bn_axis_name=data_parallel.AXIS)
    tx = optim.create_optimizer(config, optim.learning_rate_schedule(config, 100, 1000))
    state = train.create_train_state(model, config, tx, jax.random.key(0))
    weights = {"align": float(config.align.weight) or 1.0, "no_align": 0.0}
    states = {name: dp.replicate(state) for name in weights}
    del state

    def runner(name: str) -> Callable[[int], None]:
        step = train.wrapped_step(config, dp, align_weight=weights[name])

        def run(k: int) -> None:
            for _ in range(k):
                states[name], metrics = step(states[name], next_batch())
            jax.block_until_ready((states[name], metrics))
        return run

    ms = interleaved({name: runner(name) for name in weights}, steps, repeats)
    stats = jax.local_devices()[0].memory_stats() or {}
    device = jax.local_devices()[0]
    common = _common(config, "fer_jax", dp.num_devices, jax.default_backend(),
                     device.device_kind, "shard_map" if config.spmd else "pmap", input_kind,
                     steps, repeats)
    memory = {"memory_bytes_in_use": stats.get("bytes_in_use"),
              "peak_memory_bytes": stats.get("peak_bytes_in_use")}
    return report(common, ms, n, memory, input_figures)


def _random_batch(n: int, size: int, num_classes: int, num_devices: int
                  ) -> Dict[str, np.ndarray]:
    """A random batch in the pipeline's device layout (num_devices, n / num_devices, ...)."""
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
        "heatmap": rng.uniform(size=(n, size, size)).astype(np.float32),
        "valid": np.ones(n, np.float32),
        "label": rng.integers(0, num_classes, n).astype(np.int32),
        "mask": np.ones(n, np.float32),
    }
    return {k: v.reshape((num_devices, -1) + v.shape[1:]) for k, v in batch.items()}


# -- the PyTorch reference -------------------------------------------------------------


def _timm_model(config, num_classes: int):
    """timm's model for config.model (its family's `timm_model`), with the aligned layer's
    module (fer_jax naming)."""
    from fer_jax.models import registry
    name = config.model.name
    layer = config.align.layers[0]
    family = registry.get(name).family
    if family.timm_model is None:
        raise ValueError(f"--reference=pytorch: config.model.name={name!r} ({family.title}) "
                         "has no timm counterpart here")
    model, modules = family.timm_model(config, num_classes)
    if layer not in modules:
        raise ValueError(f"--reference=pytorch: config.align.layers[0]={layer!r} has no timm "
                         f"counterpart; valid: {sorted(modules)}")
    return model, modules[layer]


def _as_grid(features, model):
    """Hooked output -> (B, h, w, C): a ResNet stage is (B, C, h, w); a ViT block's
    tokens lose their prefix (class) tokens and become the patch grid (`model`: timm's
    VisionTransformer, which counts them)."""
    if features.ndim == 4:
        return features.permute(0, 2, 3, 1)
    tokens = features[:, model.num_prefix_tokens:]
    side = int(round(tokens.shape[1] ** 0.5))
    return tokens.reshape(tokens.shape[0], side, side, tokens.shape[2])


def torch_alignment_loss(features, heatmaps, valid):
    """fer_jax.alignment.alignment_loss for one layer, in PyTorch, float32.

    features (B, h, w, C); heatmaps (B, H, W) in [0, 1]; valid (B,).
    """
    import torch
    import torch.nn.functional as F
    att = features.float().mean(-1)
    target = F.interpolate(heatmaps[:, None], size=att.shape[1:], mode="bilinear",
                           antialias=True, align_corners=False)[:, 0]
    lo = heatmaps.amin(dim=(1, 2), keepdim=True)
    hi = heatmaps.amax(dim=(1, 2), keepdim=True)
    target = torch.minimum(torch.maximum(target, lo), hi)
    a, b = att.flatten(1), target.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)
    return (valid * (1 - cos)).sum() / valid.sum().clamp(min=1.0)


def measure_pytorch(config, steps: int, repeats: int, num_classes: int) -> Dict[str, Any]:
    """The paper's training step in PyTorch, with and without the alignment loss."""
    import contextlib
    import torch
    import torch.nn.functional as F
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    model, hooked = _timm_model(config, num_classes)
    model = model.to(device, memory_format=torch.channels_last).train()
    captured: Dict[str, Any] = {}
    hooked.register_forward_hook(lambda module, args, out: captured.update(out=out))
    opt = torch.optim.SGD(model.parameters(), lr=config.optim.learning_rate,
                          momentum=config.optim.momentum, nesterov=True,
                          weight_decay=config.optim.weight_decay)
    n, size = config.train.batch_size, config.dataset.image_size
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=gen).to(
        device, memory_format=torch.channels_last)
    heatmaps = torch.rand(n, size, size, generator=gen).to(device)
    labels = torch.randint(0, num_classes, (n,), generator=gen).to(device)
    valid = torch.ones(n, device=device)
    weight = float(config.align.weight) or 1.0
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                if config.model.dtype == "bfloat16" else contextlib.nullcontext())

    def runner(align: bool) -> Callable[[int], None]:
        def run(k: int) -> None:
            for _ in range(k):
                opt.zero_grad(set_to_none=True)
                with autocast:
                    logits = model(images)
                loss = F.cross_entropy(logits.float(), labels)
                if align:
                    loss = loss + weight * torch_alignment_loss(
                        _as_grid(captured["out"], model), heatmaps, valid)
                loss.backward()
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ms = interleaved({"align": runner(True), "no_align": runner(False)}, steps, repeats)
    cuda = device.type == "cuda"
    common = _common(config, "pytorch", 1, "gpu" if cuda else "cpu",
                     torch.cuda.get_device_name(device) if cuda else "cpu",
                     "eager", "synthetic", steps, repeats)
    memory = {"memory_bytes_in_use": torch.cuda.memory_allocated(device) if cuda else None,
              "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else None}
    return report(common, ms, n, memory, None)


def main(argv):
    from fer_jax import cli
    cli.start(argv)
    if FLAGS.cams:
        from fer_jax import cam_benchmark
        print(json.dumps(cam_benchmark.measure(FLAGS.cam_model, FLAGS.cam_size, FLAGS.cam_batch,
                                               repeats=FLAGS.repeats)))
        return
    if FLAGS.predict:
        from fer_jax import predict_benchmark
        if FLAGS.reference not in (None, "fer"):
            raise app.UsageError(f"--predict --reference={FLAGS.reference}: the predict "
                                 "benchmark's reference is 'fer'")
        if FLAGS.reference == "fer" and FLAGS.predict_video:
            raise app.UsageError("--reference=fer compares photos: drop --predict_video")
        if FLAGS.reference == "fer":
            print(json.dumps(predict_benchmark.compare_with_fer(
                FLAGS.predict_folder, FLAGS.reference_python or sys.executable,
                count=FLAGS.predict_photos)))
        elif FLAGS.predict_video:
            print(json.dumps(predict_benchmark.measure_video(FLAGS.predict_video)))
        else:
            print(json.dumps(predict_benchmark.measure(FLAGS.predict_photos)))
        return
    if FLAGS.reference == "fer":
        raise app.UsageError("--reference=fer compares predict: add --predict")
    config = cli.config()
    if config is None:
        raise app.UsageError("--config is required (or --cams, or --predict)")
    if (FLAGS.input_only or FLAGS.records_demo) and FLAGS.input != "records":
        raise app.UsageError("--input_only and --records_demo need --input=records")
    if FLAGS.reference == "pytorch":
        if FLAGS.input != "synthetic":
            raise app.UsageError("--reference=pytorch measures synthetic input only")
        result = measure_pytorch(config, FLAGS.steps, FLAGS.repeats, FLAGS.num_classes)
        print(json.dumps(result), flush=True)
        return
    scratch = None
    if FLAGS.records_demo:
        records_dir = FLAGS.records_dir or (scratch := tempfile.mkdtemp(prefix="fer_jax_rec_"))
        config.dataset.name = demo_records(records_dir, FLAGS.records_demo,
                                           config.dataset.image_size)
        config.dataset.data_dir = records_dir
        config.dataset.train_split = "train"
    try:
        result = measure(config, FLAGS.steps, FLAGS.repeats, FLAGS.num_classes,
                         FLAGS.input, FLAGS.input_batches, FLAGS.profile_steps,
                         FLAGS.input_only)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result), flush=True)


def demo_records(data_dir: str, num: int, image_size: int) -> str:
    """The name of image_folder records of `num` generated faces at `image_size` in
    `data_dir`, built first (data_prep.benchmark --records_only, in a subprocess, as it
    loads TensorFlow) unless they are there."""
    from fer_jax import datasets
    name = f"image_folder/faces{image_size}"
    try:
        datasets.find(name, data_dir)
        return name
    except FileNotFoundError:
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-m", "data_prep.benchmark", f"--records_only={data_dir}",
                    f"--num={num}", f"--image_size={image_size}"], check=True, cwd=root)
    return name


def _define_flags() -> None:
    """The command line; defined only when run as a program, so that importing this module
    (tests, other tools) leaves absl's flags alone."""
    config_flags.DEFINE_config_file("config", None, "Config file (see configs/).")
    flags.DEFINE_enum("input", "synthetic", ["synthetic", "records"],
                      "Where batches come from (see the module docstring).")
    flags.DEFINE_enum("reference", None, ["pytorch", "fer"],
                      "Measure a reference instead: 'pytorch' (training step, --cams uses "
                      "pytorch-grad-cam anyway) or, with --predict, 'fer' (the fer package).")
    flags.DEFINE_string("reference_python", None, "--reference=fer: the Python of an "
                        "environment with fer installed (default: this one).")
    flags.DEFINE_integer("predict_video", 0, "--predict: time `predict --video` on a generated "
                         "clip of this many frames instead (shipped model).")
    flags.DEFINE_string("predict_folder", None, "--predict --reference=fer: photos to compare "
                        "on (default: --predict_photos generated astronaut photos).")
    flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
    flags.DEFINE_integer("repeats", 5, "Alternating measurements of each variant (median kept).")
    flags.DEFINE_integer("num_classes", 7, "Classes of the classifier head (synthetic input).")
    flags.DEFINE_integer("input_batches", 50, "Batches timed for the input pipeline alone "
                         "(--input=records).")
    flags.DEFINE_integer("profile_steps", 2, "--input=records: batches built stage by stage for "
                         "the profile of one core.")
    flags.DEFINE_boolean("input_only", False, "--input=records: measure the input pipeline "
                         "alone, no training step.")
    flags.DEFINE_integer("records_demo", 0, "--input=records: build image_folder records of this "
                         "many generated faces at config.dataset.image_size and read them.")
    flags.DEFINE_string("records_dir", None, "--records_demo: data_dir of those records (kept, "
                        "reused when built); default a temporary folder, removed.")
    flags.DEFINE_boolean("cams", False, "Time every CAM method against pytorch-grad-cam instead.")
    flags.DEFINE_string("cam_model", "resnet50", "--cams: timm/fer_jax model (random weights).")
    flags.DEFINE_integer("cam_size", 112, "--cams: image size.")
    flags.DEFINE_integer("cam_batch", 16, "--cams: batch size.")
    flags.DEFINE_boolean("predict", False, "Time fer_jax.predict on a folder of photos instead.")
    flags.DEFINE_integer("predict_photos", 200, "--predict: photos in the small folder (large: 4x).")


if __name__ == "__main__":
    from fer_jax import cli
    _define_flags()
    cli.run(main)
