"""fer_jax.weights and fer_jax.convert_weights, without PyTorch.

Files are written here in the published layouts (timm state-dict names with
torch shapes, Google ViT/AugReg npz names) from random values; the timm parity
against the real implementations is in test_timm_parity.py.
"""
import json
import math
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors import numpy as st_numpy

from fer_jax import convert_weights, weights
from fer_jax.models import resnet, vit


def _random_variables(model, size: int, seed: int = 0):
    """Variables of the model's shapes filled with random numbers (BN var positive)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        value = rng.standard_normal(s.shape).astype(np.float32) * 0.3
        return np.abs(value) + 0.5 if path[-1].key == "var" else value
    return jax.tree_util.tree_map_with_path(fill, shapes)


# ----------------------------------------------------------------------------- timm layouts

def _to_timm_resnet(variables):
    """Inverse mapping, written independently: fer_jax ResNet -> torchvision state dict."""
    params, stats = variables["params"], variables["batch_stats"]
    out = {}

    def bn(prefix, p, s):
        out.update({f"{prefix}.weight": p["scale"], f"{prefix}.bias": p["bias"],
                    f"{prefix}.running_mean": s["mean"], f"{prefix}.running_var": s["var"],
                    f"{prefix}.num_batches_tracked": np.array(7, np.int64)})
    out["conv1.weight"] = np.transpose(params["stem"]["conv"]["kernel"], (3, 2, 0, 1))
    bn("bn1", params["stem"]["bn"], stats["stem"]["bn"])
    for stage in (1, 2, 3, 4):
        for block, p in params[f"stage{stage}"].items():
            prefix, s = f"layer{stage}.{block[5:]}", stats[f"stage{stage}"][block]
            for name, leaf in p.items():
                if "conv" in name:
                    torch_name = "downsample.0" if name == "downsample_conv" else name
                    out[f"{prefix}.{torch_name}.weight"] = np.transpose(leaf["kernel"], (3, 2, 0, 1))
                else:
                    bn(f"{prefix}.{'downsample.1' if name == 'downsample_bn' else name}", leaf, s[name])
    out["fc.weight"], out["fc.bias"] = params["head"]["kernel"].T, params["head"]["bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _to_timm_vit(variables):
    """Inverse mapping: fer_jax ViT -> timm VisionTransformer state dict (fused qkv)."""
    p = variables["params"]
    d = p["cls_token"].shape[-1]
    out = {"patch_embed.proj.weight": np.transpose(p["patch_embed"]["kernel"], (3, 2, 0, 1)),
           "patch_embed.proj.bias": p["patch_embed"]["bias"],
           "cls_token": p["cls_token"], "pos_embed": p["pos_embed"],
           "norm.weight": p["encoder_norm"]["scale"], "norm.bias": p["encoder_norm"]["bias"],
           "head.weight": p["head"]["kernel"].T, "head.bias": p["head"]["bias"]}
    i = 0
    while f"encoder{i}" in p:
        e, b = p[f"encoder{i}"], f"blocks.{i}."
        for n in ("norm1", "norm2"):
            out[b + n + ".weight"], out[b + n + ".bias"] = e[n]["scale"], e[n]["bias"]
        qkv = [e["attn"][n] for n in ("query", "key", "value")]
        out[b + "attn.qkv.weight"] = np.concatenate([t["kernel"].reshape(d, d).T for t in qkv])
        out[b + "attn.qkv.bias"] = np.concatenate([t["bias"].reshape(d) for t in qkv])
        out[b + "attn.proj.weight"] = e["attn"]["out"]["kernel"].reshape(d, d).T
        out[b + "attn.proj.bias"] = e["attn"]["out"]["bias"]
        for n in ("fc1", "fc2"):
            out[b + f"mlp.{n}.weight"] = e["mlp"][n]["kernel"].T
            out[b + f"mlp.{n}.bias"] = e["mlp"][n]["bias"]
        i += 1
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _assert_trees_equal(a, b):
    flat_a = jax.tree_util.tree_leaves_with_path(a)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
    assert len(flat_a) == len(flat_b)
    for path, leaf in flat_a:
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flat_b[path]),
                                      err_msg=jax.tree_util.keystr(path))


def test_timm_resnet_safetensors_round_trip(tmp_path):
    model = resnet.ResNet50(num_classes=4)
    source = _random_variables(model, 32)
    path = str(tmp_path / "r50.safetensors")
    st_numpy.save_file(_to_timm_resnet(source), path)
    blank = jax.tree_util.tree_map(np.zeros_like, source)
    notes = []
    loaded = weights.load_pretrained(blank, path, "resnet50", num_classes=4, log=notes.append)
    _assert_trees_equal(source, loaded)
    assert set(loaded) == {"params", "batch_stats"}
    assert any("num_batches_tracked" in n for n in notes)


def test_timm_vit_safetensors_round_trip(tmp_path):
    model = vit.VIT_MODELS["vit_tiny_patch16"](num_classes=3)
    source = _random_variables(model, 224)
    path = str(tmp_path / "vit.safetensors")
    st_numpy.save_file(_to_timm_vit(source), path)
    loaded = weights.load_pretrained(jax.tree_util.tree_map(np.zeros_like, source), path,
                                     "vit_tiny_patch16", num_classes=3)
    _assert_trees_equal(source, loaded)


def test_head_is_reinitialised_when_the_class_count_differs(tmp_path):
    file_vars = _random_variables(resnet.ResNet18(num_classes=1000), 32, seed=1)
    path = str(tmp_path / "r18.safetensors")
    st_numpy.save_file(_to_timm_resnet(file_vars), path)
    fresh = _random_variables(resnet.ResNet18(num_classes=7), 32, seed=2)
    notes = []
    loaded = weights.load_pretrained(fresh, path, "resnet18", num_classes=7, log=notes.append)
    np.testing.assert_array_equal(loaded["params"]["head"]["kernel"], fresh["params"]["head"]["kernel"])
    np.testing.assert_array_equal(loaded["params"]["stage4"]["block1"]["conv2"]["kernel"],
                                  file_vars["params"]["stage4"]["block1"]["conv2"]["kernel"])
    assert any("re-initialised params/head/kernel (file has 1000 classes, model has 7)" in n
               for n in notes), notes


def test_mismatching_file_gives_one_error_listing_everything(tmp_path):
    state = _to_timm_resnet(_random_variables(resnet.ResNet18(num_classes=5), 32))
    del state["layer2.0.bn1.running_var"]                        # missing
    state["layer9.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)  # unexpected
    state["layer1.1.conv2.weight"] = np.zeros((64, 64, 1, 1), np.float32)  # mis-shaped
    path = str(tmp_path / "bad.safetensors")
    st_numpy.save_file(state, path)
    blank = _random_variables(resnet.ResNet18(num_classes=5), 32)
    with pytest.raises(weights.CheckpointMismatchError) as err:
        weights.load_pretrained(blank, path, "resnet18", num_classes=5)
    e = err.value
    assert e.missing == ["batch_stats/stage2/block0/bn1/var (128,)"]
    assert e.unexpected == ["layer9.0.conv1.weight (1, 1, 1, 1) -> params/stage9/block0/conv1/kernel"]
    assert len(e.misshaped) == 1 and "params/stage1/block1/conv2/kernel" in e.misshaped[0]
    assert "(1, 1, 64, 64)" in e.misshaped[0] and "(3, 3, 64, 64)" in e.misshaped[0]
    assert "missing" in str(e) and "unexpected" in str(e) and "mis-shaped" in str(e)


def test_resnet_file_into_a_vit_is_a_mismatch(tmp_path):
    path = str(tmp_path / "r18.safetensors")
    st_numpy.save_file(_to_timm_resnet(_random_variables(resnet.ResNet18(num_classes=5), 32)), path)
    blank = _random_variables(vit.VIT_MODELS["vit_tiny_patch16"](num_classes=5), 224)
    with pytest.raises(weights.CheckpointMismatchError) as err:
        weights.load_pretrained(blank, path, "vit_tiny_patch16", num_classes=5)
    assert err.value.missing and err.value.unexpected


def test_bad_names_and_extensions_are_named(tmp_path):
    blank = _random_variables(resnet.ResNet18(num_classes=5), 32)
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match="'.ckpt'"):
        weights.load_pretrained(blank, str(tmp_path / "w.ckpt"), "resnet18", 5)
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"w\.pth'.*PyTorch"):   # unreadable, or no torch
        weights.load_pretrained(blank, str(tmp_path / "w.pth"), "resnet18", 5)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        weights.load_pretrained(blank, str(tmp_path / "nope.npz"), "resnet18", 5)
    with pytest.raises(ValueError, match="num_classes=9"):
        weights.convert(blank, {}, "x.safetensors", "resnet18", 9)
    with pytest.raises(ValueError, match="model_name='convnext'"):
        weights.convert(blank, {}, "x.safetensors", "convnext", 5)


def test_bfloat16_safetensors_are_read_without_torch(tmp_path):
    """safetensors.numpy has no bfloat16; such files are read from their header."""
    values = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    raw = values.astype(ml_dtypes.bfloat16).tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, len(raw)]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + raw)
    tensors = weights.read_tensors(str(path))
    np.testing.assert_array_equal(tensors["w"].astype(np.float32), values)


# ----------------------------------------------------------------------------- Google npz

def _google_npz(depth=12, dim=192, heads=3, patch=16, grid=2, classes=1000, seed=0):
    """Random tensors in the published ViT/AugReg npz layout (flax names and shapes)."""
    rng = np.random.default_rng(seed)
    hd, mlp = dim // heads, 4 * dim

    def r(*shape, scale=None):
        scale = 1 / math.sqrt(shape[0]) if scale is None else scale
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    w = {"embedding/kernel": r(patch, patch, 3, dim, scale=0.05), "embedding/bias": r(dim, scale=0.1),
         "cls": r(1, 1, dim, scale=0.5),
         "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, dim, scale=0.5),
         "Transformer/encoder_norm/scale": 1 + r(dim, scale=0.2),
         "Transformer/encoder_norm/bias": r(dim, scale=0.1),
         "head/kernel": r(dim, classes), "head/bias": r(classes, scale=0.1)}
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            w[b + ln + "/scale"], w[b + ln + "/bias"] = 1 + r(dim, scale=0.2), r(dim, scale=0.1)
        a = b + "MultiHeadDotProductAttention_1/"
        for n in ("query", "key", "value"):
            w[a + n + "/kernel"], w[a + n + "/bias"] = r(dim, heads, hd), r(heads, hd, scale=0.1)
        w[a + "out/kernel"], w[a + "out/bias"] = r(heads, hd, dim, scale=1 / math.sqrt(dim)), r(dim, scale=0.1)
        w[b + "MlpBlock_3/Dense_0/kernel"], w[b + "MlpBlock_3/Dense_0/bias"] = r(dim, mlp), r(mlp, scale=0.1)
        w[b + "MlpBlock_3/Dense_1/kernel"], w[b + "MlpBlock_3/Dense_1/bias"] = r(mlp, dim), r(dim, scale=0.1)
    return w


def _numpy_vit(w, x, head):
    """Direct float64 NumPy forward of a Google-layout ViT. x (B, H, W, 3) -> logits (B, K)."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    erf = np.vectorize(math.erf)

    def ln(t, prefix):
        mu, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + 1e-6) * w[prefix + "/scale"] + w[prefix + "/bias"]
    kernel = w["embedding/kernel"]
    p, dim = kernel.shape[0], kernel.shape[-1]
    b, hgt, wid, c = x.shape
    patches = x.reshape(b, hgt // p, p, wid // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    tokens = patches.reshape(b, -1, p * p * c) @ kernel.reshape(p * p * c, dim) + w["embedding/bias"]
    tokens = np.concatenate([np.broadcast_to(w["cls"], (b, 1, dim)), tokens], 1)
    tokens = tokens + w["Transformer/posembed_input/pos_embedding"]
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in w:
        blk = f"Transformer/encoderblock_{i}/"
        att = blk + "MultiHeadDotProductAttention_1/"
        y = ln(tokens, blk + "LayerNorm_0")
        q, k, v = (np.einsum("bnd,dhk->bnhk", y, w[att + n + "/kernel"]) + w[att + n + "/bias"]
                   for n in ("query", "key", "value"))
        logits = np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(q.shape[-1])
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        o = np.einsum("bhqs,bshk->bqhk", probs, v)
        tokens = tokens + np.einsum("bqhk,hkd->bqd", o, w[att + "out/kernel"]) + w[att + "out/bias"]
        y = ln(tokens, blk + "LayerNorm_2")
        y = y @ w[blk + "MlpBlock_3/Dense_0/kernel"] + w[blk + "MlpBlock_3/Dense_0/bias"]
        y = 0.5 * y * (1 + erf(y / math.sqrt(2)))                    # exact GELU
        tokens = tokens + y @ w[blk + "MlpBlock_3/Dense_1/kernel"] + w[blk + "MlpBlock_3/Dense_1/bias"]
        i += 1
    tokens = ln(tokens, "Transformer/encoder_norm")
    features = tokens[:, 0] if head == "token" else tokens[:, 1:].mean(1)
    return features @ w["head/kernel"] + w["head/bias"]


@pytest.mark.parametrize("head,prefix", [("token", ""), ("gap", "opt/target/")])
def test_google_npz_loads_and_matches_a_direct_computation(tmp_path, head, prefix):
    tensors = _google_npz(classes=6)
    file_tensors = {prefix + k: v for k, v in tensors.items()}
    file_tensors[prefix + "pre_logits/kernel"] = np.zeros((192, 192), np.float32)
    if prefix:
        file_tensors["opt/state/step"] = np.array(3)
    path = str(tmp_path / "augreg.npz")
    np.savez(path, **file_tensors)

    model = vit.VIT_MODELS["vit_tiny_patch16"](num_classes=6, image_size=32, head=head)
    blank = _random_variables(model, 32)
    notes = []
    variables = weights.load_pretrained(blank, path, "vit_tiny_patch16", 6, log=notes.append)
    assert any("pre_logits" in n for n in notes)
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    logits = jax.jit(model.apply)(variables, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(logits), _numpy_vit(tensors, x.astype(np.float64), head),
                               atol=1e-4)


def test_google_npz_pos_embedding_is_resampled_bilinear_as_timm(tmp_path):
    tensors = _google_npz(depth=1, grid=3, classes=6)
    path = str(tmp_path / "augreg.npz")
    np.savez(path, **tensors)
    model = vit.ViT(num_classes=6, patch_size=16, embed_dim=192, depth=1, num_heads=3, image_size=80)
    notes = []
    variables = weights.load_pretrained(_random_variables(model, 80), path, "vit_custom", 6,
                                        log=notes.append)
    assert "resampled pos_embed grid 3x3 -> 5x5 (bilinear)" in notes
    expected = vit.resample_pos_embed(jnp.asarray(tensors["Transformer/posembed_input/pos_embedding"]),
                                      (5, 5), (3, 3), method="bilinear", antialias=False)
    np.testing.assert_allclose(variables["params"]["pos_embed"], expected, atol=1e-6)


def test_npz_without_vit_keys_is_rejected(tmp_path):
    path = str(tmp_path / "other.npz")
    np.savez(path, foo=np.zeros(3))
    blank = _random_variables(vit.VIT_MODELS["vit_tiny_patch16"](num_classes=5), 224)
    with pytest.raises(ValueError, match="embedding/kernel"):
        weights.load_pretrained(blank, path, "vit_tiny_patch16", 5)
    with pytest.raises(ValueError, match="'resnet18' is not"):
        weights.load_pretrained(_random_variables(resnet.ResNet18(num_classes=5), 32), path, "resnet18", 5)


# ----------------------------------------------------------------------------- fer_jax format + CLI

def test_save_and_load_round_trip(tmp_path):
    source = _random_variables(resnet.ResNet18(num_classes=5), 32)
    path = str(tmp_path / "sub" / "r18.npz")
    weights.save(source, path, "resnet18")
    loaded, name = weights.load(path)
    assert name == "resnet18"
    _assert_trees_equal(source, loaded)
    again = weights.load_pretrained(jax.tree_util.tree_map(np.zeros_like, source), path, "resnet18", 5)
    _assert_trees_equal(source, again)
    with pytest.raises(ValueError, match="'resnet18', not 'resnet34'"):
        weights.load_pretrained(source, path, "resnet34", 5)


def test_convert_weights_cli_writes_a_loadable_file(tmp_path, capsys):
    tensors = _google_npz(depth=12, grid=14, classes=1000)
    src = str(tmp_path / "ViT-Ti_16.npz")
    np.savez(src, **tensors)
    out_dir = tmp_path / "out"
    rc = convert_weights.main(["--model=vit_tiny_patch16", f"--input={src}", f"--output={out_dir}",
                               "--num_classes=7", "--image_size=160"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "re-initialised: 2" in printed and "file has 1000 classes, model has 7" in printed
    assert "pos_embed grid 14x14 -> 10x10" in printed
    variables, name = weights.load(str(out_dir / "vit_tiny_patch16_7cls.npz"))
    assert name == "vit_tiny_patch16"
    assert variables["params"]["pos_embed"].shape == (1, 101, 192)
    assert variables["params"]["head"]["kernel"].shape == (192, 7)
    np.testing.assert_array_equal(variables["params"]["encoder11"]["mlp"]["fc2"]["kernel"],
                                  tensors["Transformer/encoderblock_11/MlpBlock_3/Dense_1/kernel"])


def test_convert_weights_cli_reports_errors(tmp_path, capsys):
    rc = convert_weights.main(["--model=resnet18", f"--input={tmp_path / 'missing.safetensors'}",
                               f"--output={tmp_path}", "--num_classes=7"])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
