"""Parity with the reference implementations: timm models with random weights.

Each test builds a timm model (random weights, BatchNorm statistics made to
matter), saves its state dict as `.safetensors`, loads it with
`fer_jax.weights.load_pretrained` and compares logits and every stage / block
output in eval mode, fp32, max abs error <= 1e-4.
"""
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# triton (pulled in by torchvision/timm; GPU-only) segfaults on import when
# TensorFlow was imported first, as other test modules do. Hide it: torch then
# runs without it, as on any CPU-only machine.
if "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

from fer_jax import weights  # noqa: E402
from fer_jax.models import resnet, vit  # noqa: E402

ATOL = 1e-4

torch.set_num_threads(2)


def _randomise(model, seed: int) -> None:
    """Random norm affines, biases and tokens, so that none of them is trivially 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    # A residual block's last BN scales its branch: damped, as in trained nets,
    # so that fp32 rounding does not compound block after block past 1e-4.
    last_bn = re.compile(r"layer\d\.\d+\.bn3\.weight" if "Bottleneck" in str(type(model.layer1[0]))
                         else r"layer\d\.\d+\.bn2\.weight") if hasattr(model, "layer1") else None
    with torch.no_grad():
        for name, p in model.named_parameters():
            if last_bn is not None and last_bn.fullmatch(name):
                p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.1)
            elif p.ndim == 1 and name.endswith("weight"):          # norm scales
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.ndim == 1:                                     # biases
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif name in ("cls_token", "pos_embed"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _calibrate_batchnorm(model, image_size: int, seed: int) -> None:
    """Running stats := statistics of a random batch (momentum 1), then a perturbation.

    Random weights with default running stats (0, 1) make eval-mode activations
    blow up; calibrated ones keep them O(1) while every BN still matters.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, image_size, image_size, generator=g))
        for bn in bns:
            # A channel that the small batch left (nearly) constant would divide
            # fp32 rounding noise by ~sqrt(eps): floor the variance.
            var = bn.running_var.clamp(min=0.1 * float(bn.running_var.mean()))
            bn.running_var.copy_(var * (torch.rand(var.shape, generator=g) * 0.4 + 0.8))
            bn.running_mean.add_(torch.randn(bn.running_mean.shape, generator=g) * 0.05)
    model.eval()


def _blank_variables(model, size: int):
    """Zero variables of the model's shapes: cheaper than an eager `init`, and all get loaded."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _save(model, tmp_path) -> str:
    path = str(tmp_path / "model.safetensors")
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def _run_fer_jax(model, variables, x_nchw: np.ndarray, layers):
    """-> (logits, {layer: (B, h, w, C) output})."""
    x = jnp.asarray(np.transpose(x_nchw, (0, 2, 3, 1)))
    wanted = frozenset(layers)
    logits, state = model.apply(
        variables, x, train=False, mutable=["intermediates"],
        capture_intermediates=lambda mdl, method: method == "__call__" and "/".join(mdl.path) in wanted)
    return np.asarray(logits), {n: np.asarray(state["intermediates"][n]["__call__"][0]) for n in layers}


def _assert_close(name: str, ours: np.ndarray, ref_nchw_or_bk, nchw: bool = True) -> None:
    ref = ref_nchw_or_bk.detach().numpy()
    if nchw:
        ref = np.transpose(ref, (0, 2, 3, 1))
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != reference {ref.shape}"
    err = float(np.max(np.abs(ours - ref)))
    assert err <= ATOL, f"{name}: max abs error {err:.3g} > {ATOL} (reference max |x| {np.abs(ref).max():.3g})"


@pytest.mark.parametrize("name,ctor", [("resnet18", resnet.ResNet18), ("resnet50", resnet.ResNet50)])
def test_resnet_matches_timm(tmp_path, name, ctor):
    size = 64
    ref = timm.create_model(name, pretrained=False, num_classes=10)
    _randomise(ref, seed=0)
    _calibrate_batchnorm(ref, size, seed=1)
    path = _save(ref, tmp_path)

    model = ctor(num_classes=10)
    init = _blank_variables(model, size)
    variables = weights.load_pretrained(init, path, name, num_classes=10)

    x = np.random.default_rng(2).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref_logits = ref(torch.from_numpy(x))
        _, ref_feats = ref.forward_intermediates(torch.from_numpy(x))
    layers = ["stem", "stage1", "stage2", "stage3", "stage4"]
    logits, feats = _run_fer_jax(model, variables, x, layers)
    for layer, ref_feat in zip(layers, ref_feats):
        _assert_close(layer, feats[layer], ref_feat)
    _assert_close("logits", logits, ref_logits, nchw=False)


def _vit_case(tmp_path, timm_name, ours_name, size, timm_kwargs, ours_kwargs):
    ref = timm.create_model(timm_name, pretrained=False, num_classes=10, **timm_kwargs)
    _randomise(ref, seed=3)
    ref.eval()
    path = _save(ref, tmp_path)
    x = np.random.default_rng(4).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref_logits = ref(torch.from_numpy(x))
        final, ref_blocks = ref.forward_intermediates(torch.from_numpy(x), output_fmt="NCHW")
        ref_norm_grid = final[:, ref.num_prefix_tokens:]
    return ref, path, x, ref_logits, ref_blocks, ref_norm_grid


def _check_vit(model, variables, x, ref_logits, ref_blocks, ref_norm_grid):
    depth = len(ref_blocks)
    layers = [f"block{i}" for i in range(depth)] + ["encoder_norm_grid"]
    logits, feats = _run_fer_jax(model, variables, x, layers)
    for i, ref_block in enumerate(ref_blocks):
        _assert_close(f"block{i}", feats[f"block{i}"], ref_block)
    grid = feats["encoder_norm_grid"]
    _assert_close("encoder_norm_grid", grid.reshape(grid.shape[0], -1, grid.shape[-1]),
                  ref_norm_grid, nchw=False)
    _assert_close("logits", logits, ref_logits, nchw=False)


def test_vit_tiny_token_head_at_160px_matches_timm(tmp_path):
    """224-px pos_embed resampled to a 10x10 grid: at run time and at load time."""
    ref, path, x, ref_logits, ref_blocks, ref_norm_grid = _vit_case(
        tmp_path, "vit_tiny_patch16_224", "vit_tiny_patch16", 160,
        dict(dynamic_img_size=True), {})
    # Run-time resampling: pos_embed kept on the 14x14 grid.
    model = vit.VIT_MODELS["vit_tiny_patch16"](num_classes=10, head="token", image_size=224)
    init = _blank_variables(model, 224)
    variables = weights.load_pretrained(init, path, "vit_tiny_patch16", num_classes=10)
    _check_vit(model, variables, x, ref_logits, ref_blocks, ref_norm_grid)
    # Load-time resampling (timm's checkpoint_filter_fn): pos_embed stored on 10x10.
    model160 = vit.VIT_MODELS["vit_tiny_patch16"](num_classes=10, head="token", image_size=160)
    init160 = _blank_variables(model160, 160)
    notes = []
    variables160 = weights.load_pretrained(init160, path, "vit_tiny_patch16", 10, log=notes.append)
    assert any("pos_embed grid 14x14 -> 10x10" in n for n in notes), notes
    _check_vit(model160, variables160, x, ref_logits, ref_blocks, ref_norm_grid)


def test_deit_small_gap_head_matches_timm(tmp_path):
    """GAP head = timm's global_pool='avg' with the final norm before pooling (fc_norm=False)."""
    ref, path, x, ref_logits, ref_blocks, ref_norm_grid = _vit_case(
        tmp_path, "deit_small_patch16_224", "deit_small_patch16", 224,
        dict(global_pool="avg", fc_norm=False), {})
    model = vit.VIT_MODELS["deit_small_patch16"](num_classes=10, head="gap")
    init = _blank_variables(model, 224)
    variables = weights.load_pretrained(init, path, "deit_small_patch16", num_classes=10)
    _check_vit(model, variables, x, ref_logits, ref_blocks, ref_norm_grid)
    # The CAM of the GAP head averages back to the logits (minus the bias).
    _, feats = _run_fer_jax(model, variables, x, ["encoder_norm_grid"])
    cams = feats["encoder_norm_grid"] @ np.asarray(variables["params"]["head"]["kernel"])
    np.testing.assert_allclose(cams.mean(axis=(1, 2)) + np.asarray(variables["params"]["head"]["bias"]),
                               ref_logits.numpy(), atol=ATOL)


def test_deit_small_token_head_matches_timm(tmp_path):
    """The published DeiT-S (class-token head) at its native 224 px."""
    ref, path, x, ref_logits, ref_blocks, ref_norm_grid = _vit_case(
        tmp_path, "deit_small_patch16_224", "deit_small_patch16", 224, {}, {})
    model = vit.VIT_MODELS["deit_small_patch16"](num_classes=10, head="token")
    init = _blank_variables(model, 224)
    variables = weights.load_pretrained(init, path, "deit_small_patch16", num_classes=10)
    logits, _ = _run_fer_jax(model, variables, x, [])
    _assert_close("logits", logits, ref_logits, nchw=False)
