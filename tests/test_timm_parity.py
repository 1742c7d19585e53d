"""Parity with the reference implementations: timm models with random weights.

Each test builds a timm model (random weights, BatchNorm statistics made to
matter), saves its state dict as `.safetensors`, loads it with
`fer_jax.weights.load_pretrained` and compares logits and every stage / block
output in eval mode, fp32, max abs error <= 1e-4.
"""
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from fer_jax import weights  # noqa: E402
from fer_jax.models import resnet, vit  # noqa: E402
from timm_reference import (blank_variables as _blank_variables, create as _create,  # noqa: E402
                            calibrate_batchnorm as _calibrate_batchnorm, randomise as _randomise,
                            save as _save)

ATOL = 1e-4


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
    ref = _create(name, seed=5, num_classes=10)
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
    ref = _create(timm_name, seed=6, num_classes=10, **timm_kwargs)
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
