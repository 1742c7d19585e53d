"""CAM speed: fer_jax's engine against pytorch-grad-cam on the same CPU and weights.

`python -m fer_jax.benchmark --cams` (see fer_jax/benchmark.py) calls `measure`.
A random timm ResNet is saved as safetensors and loaded into fer_jax, so both
libraries run the same network; every method both have is timed on the same
batch, the two libraries interleaved (median of `repeats`). fer_jax computes
each method alone (one jitted forward + backward each), all gradient methods
together (one forward, one backward) and the whole set together; for
pytorch-grad-cam the whole set is the sum of its per-method calls, as its
users run them. Score-CAM runs one forward per channel, so it is timed on its
own, smaller setting (`score_*` arguments), which the JSON names, beside a plain
forward of as many images as it masks at once (`forward`): Score-CAM's ratio is
bounded by that of the two libraries' convolutions.
"""
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import cams

GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
SHARED_METHODS = GRADIENT_METHODS + ("eigencam",)   # besides Score-CAM
TIMM_LAYER = {"stage3": "layer3", "stage4": "layer4"}
# Score-CAM's masked images per forward: fer_jax's default, and the same for pytorch-grad-cam.
SCORE_BATCH = cams.CamSpec.score_batch


def _pair(model_name: str, size: int, classes: int, workdir: str):
    """(timm model, fer_jax model, fer_jax variables) with the same random weights."""
    import timm
    import torch
    import safetensors.torch
    from fer_jax import config_schema, models, weights
    torch.manual_seed(0)
    ref = timm.create_model(model_name, pretrained=False, num_classes=classes).eval()
    path = os.path.join(workdir, f"{model_name}.safetensors")
    safetensors.torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
    cfg = config_schema.defaults().model
    cfg.update({"name": model_name, "width": 64, "large_maps": False, "dtype": "float32",
                "vit_head": "gap", "vit_pos_size": 224, "dropout": 0.0, "drop_path": 0.0})
    model = models.create_model(cfg, classes)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
    blank = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return ref, model, weights.load_pretrained(blank, path, model_name, classes)


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _ours(model, variables, x, classes, methods: Sequence[str], layer: str) -> Callable:
    spec = cams.spec_for(model, methods, (layer,), score_batch=SCORE_BATCH)
    run = jax.jit(lambda v, x, c: cams.explain(model, v, x, c, spec).maps)
    jax.block_until_ready(run(variables, x, classes))   # compile
    return lambda: jax.block_until_ready(run(variables, x, classes))


def _theirs(ref, layer: str, x_nchw, classes, method: str) -> Callable:
    import pytorch_grad_cam as pgc
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    cls = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
           "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM,
           "scorecam": pgc.ScoreCAM}[method]
    cam = cls(model=ref, target_layers=[getattr(ref, TIMM_LAYER[layer])])
    if method == "scorecam":
        cam.batch_size = SCORE_BATCH   # the same images per forward as fer_jax
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    tensor = torch.from_numpy(x_nchw)
    return lambda: cam(input_tensor=tensor, targets=targets)


def _forwards(ref, model, variables, size: int, ours: Dict[str, Callable],
              theirs: Dict[str, Callable]) -> None:
    """Adds a 'forward' entry to both: logits of SCORE_BATCH random images (no gradient)."""
    x = np.random.default_rng(1).standard_normal((SCORE_BATCH, size, size, 3)).astype(np.float32)
    xj = jnp.asarray(x)
    run = jax.jit(lambda v, x: model.apply(v, x, train=False))
    jax.block_until_ready(run(variables, xj))   # compile
    ours["forward"] = lambda: jax.block_until_ready(run(variables, xj))
    if ref is None:
        return
    import torch
    tensor = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))

    def forward():
        with torch.no_grad():
            ref(tensor)
    forward()   # warm up
    theirs["forward"] = forward


def _setting(model_name: str, size: int, batch: int, layer: str, methods: Sequence[str],
             repeats: int, with_reference: bool, workdir: str) -> Dict[str, Any]:
    ref, model, variables = _pair(model_name, size, 7, workdir)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    classes = rng.integers(0, 7, batch)
    xj, cj = jnp.asarray(x), jnp.asarray(classes)
    ours = {m: _ours(model, variables, xj, cj, (m,), layer) for m in methods}
    together: Dict[str, Callable] = {}
    if len(methods) > 1:
        together["whole_set"] = _ours(model, variables, xj, cj, methods, layer)
        grads = [m for m in methods if m in GRADIENT_METHODS]
        if len(grads) > 1:
            together["gradient_methods"] = _ours(model, variables, xj, cj, grads, layer)
    theirs: Dict[str, Callable] = {}
    if with_reference:
        x_nchw = np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
        theirs = {m: _theirs(ref, layer, x_nchw, classes, m) for m in methods}
        for fn in theirs.values():
            fn()   # warm up (hooks, allocator)
    if "scorecam" in methods:
        # Score-CAM is forwards of masked images: a plain forward of that many images in
        # each library says how much of its ratio is the convolutions' speed.
        _forwards(ref if with_reference else None, model, variables, size, ours, theirs)
    times: Dict[str, List[float]] = {}
    for _ in range(repeats):
        for m in ours:
            times.setdefault(f"fer_jax/{m}", []).append(_time(ours[m]))
            if m in theirs:
                times.setdefault(f"pytorch_grad_cam/{m}", []).append(_time(theirs[m]))
        for name, fn in together.items():
            times.setdefault(f"fer_jax/{name}", []).append(_time(fn))
    ms = {k: 1000 * statistics.median(v) / (SCORE_BATCH if k.endswith("/forward") else batch)
          for k, v in times.items()}   # per image
    out: Dict[str, Any] = {"model": model_name, "image_size": size, "batch": batch,
                           "layer": layer, "methods": {}}
    for m in ours:
        row = {"fer_jax_ms_per_image": round(ms[f"fer_jax/{m}"], 3)}
        if m in theirs:
            row["pytorch_grad_cam_ms_per_image"] = round(ms[f"pytorch_grad_cam/{m}"], 3)
            row["speedup"] = round(ms[f"pytorch_grad_cam/{m}"] / ms[f"fer_jax/{m}"], 2)
        if m == "forward":   # not a method: the model alone (pytorch: the timm module)
            out["forward"] = row
        else:
            out["methods"][m] = row
    if "gradient_methods" in together:
        slowest = max(ms[f"fer_jax/{m}"] for m in methods if m in GRADIENT_METHODS)
        out["gradient_methods_together_ms_per_image"] = round(ms["fer_jax/gradient_methods"], 3)
        out["gradient_methods_together_over_slowest_single"] = round(
            ms["fer_jax/gradient_methods"] / slowest, 3)
    if "whole_set" in together:
        out["whole_set_fer_jax_ms_per_image"] = round(ms["fer_jax/whole_set"], 3)
        if theirs:
            total = sum(ms[f"pytorch_grad_cam/{m}"] for m in methods)
            out["whole_set_pytorch_grad_cam_ms_per_image"] = round(total, 3)
            out["whole_set_speedup"] = round(total / ms["fer_jax/whole_set"], 2)
    return out


def measure(model_name: str = "resnet50", size: int = 112, batch: int = 16,
            layer: str = "stage4", score_model: str = "resnet18", score_size: int = 112,
            score_batch: int = 4, score_layer: str = "stage3", repeats: int = 5
            ) -> Dict[str, Any]:
    """Both settings' timings as one JSON-ready dict (ms per image, speedups)."""
    import torch
    try:
        import pytorch_grad_cam  # noqa: F401
        with_reference = True
    except ImportError:
        with_reference = False
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as workdir:
        main = _setting(model_name, size, batch, layer, SHARED_METHODS, repeats, with_reference,
                        workdir)
        score = _setting(score_model, score_size, score_batch, score_layer, ("scorecam",),
                         max(1, repeats // 2), with_reference, workdir)
    return {
        "platform": jax.default_backend(), "devices": jax.device_count(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "pytorch_grad_cam": with_reference, "python": sys.version.split()[0],
        "main": main,
        "scorecam": score,
        "note": (f"Score-CAM runs one forward per channel: timed on {score_model} {score_layer} "
                 f"at {score_size} px, batch {score_batch}, {SCORE_BATCH} masked images per "
                 f"forward in both libraries (not in the whole set)"),
    }
