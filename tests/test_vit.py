"""fer_jax.models.vit: shapes, named token grids, CAM identity, resampling, options."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import capture
from fer_jax import config_schema
from fer_jax.models import create_model, initial_variables, vit


def _small_vit(**kwargs) -> vit.ViT:
    defaults = dict(num_classes=5, patch_size=8, embed_dim=24, depth=3, num_heads=3, image_size=32)
    defaults.update(kwargs)
    return vit.ViT(**defaults)


@pytest.fixture(scope="module")
def variables():
    """Parameters shared by every `_small_vit` variant (head, dtype and dropout add none).

    Initialised once: compiling `init` takes seconds on a small CPU.
    """
    return initial_variables(_small_vit(), jax.random.PRNGKey(0), 32)


def _capture(model, variables, x, layers):
    """-> (logits, {layer: output}); jitted, as eager dispatch is slow."""
    @jax.jit
    def run(variables, x):
        logits, state = model.apply(variables, x, mutable=["intermediates"],
                                    capture_intermediates=capture.capture_filter(layers))
        return logits, {n: capture.captured(state["intermediates"], n) for n in layers}
    return run(variables, x)


def _apply(model, variables, x, **kwargs):
    return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, x)


@pytest.mark.parametrize("name,params", [
    ("vit_tiny_patch16", 5_717_416), ("deit_small_patch16", 22_050_664),
    ("vit_base_patch16", 86_567_656), ("vit_base_patch32", 88_224_232),
])
def test_parameter_counts_match_the_published_models(name, params):
    model = vit.VIT_MODELS[name](num_classes=1000)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))
    assert sum(np.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes)) == params


def test_blocks_are_captured_as_patch_grids_without_the_class_token(variables):
    model = _small_vit()
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 40, 24, 3))   # non-square: 5x3 grid
    layers = ["encoder1", "block1", "block2", "encoder_norm_grid"]
    logits, out = _capture(model, variables, x, layers)
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    for name in ("block1", "block2", "encoder_norm_grid"):
        assert out[name].shape == (2, 5, 3, 24), name
    # Row-major patch order: grid[b, i, j] is token 1 + i * w + j of the block's output.
    np.testing.assert_array_equal(out["block1"].reshape(2, 15, 24), out["encoder1"][:, 1:])


def test_alignment_sees_every_block_as_a_spatial_layer():
    model = vit.VIT_MODELS["vit_tiny_patch16"](num_classes=7)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    layers = capture.spatial_layers(model, variables, (64, 64, 3))
    for i in range(12):
        assert layers[f"block{i}"] == (1, 4, 4, 192)
    assert layers["encoder_norm_grid"] == (1, 4, 4, 192)
    capture.check_layers(("block11",), layers)


def test_gap_cam_reproduces_the_logits(variables):
    model = _small_vit(head="gap")
    assert model.cam_layer == "encoder_norm_grid" and model.head_name == "head"
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 3))
    logits, out = _capture(model, variables, x, [model.cam_layer])
    head = variables["params"][model.head_name]
    cams = out[model.cam_layer] @ head["kernel"]                     # (B, h, w, K)
    np.testing.assert_allclose(cams.mean(axis=(1, 2)) + head["bias"], logits, atol=1e-5)


def test_token_head_uses_the_class_token_and_the_last_block_as_cam_layer(variables):
    model = _small_vit(head="token")
    assert model.cam_layer == "block2"
    x = jax.random.normal(jax.random.PRNGKey(3), (1, 32, 32, 3))
    logits, out = _capture(model, variables, x, ["encoder_norm"])
    head = variables["params"]["head"]
    np.testing.assert_allclose(out["encoder_norm"][:, 0] @ head["kernel"] + head["bias"], logits,
                               atol=1e-5)


def test_block_grid_lies_on_the_forward_path(variables):
    """Perturbing a captured grid changes the logits (needed by gradient CAMs)."""
    model = _small_vit()
    x = jax.random.normal(jax.random.PRNGKey(4), (1, 32, 32, 3))

    def logit_of_grid(delta):
        def add(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            return out + delta if context.module.name == "block1" else out
        with nn.intercept_methods(add):
            return model.apply(variables, x)[0, 0]
    delta = jnp.zeros((1, 4, 4, 24))
    grad = jax.jit(jax.grad(logit_of_grid))(delta)
    assert float(jnp.max(jnp.abs(grad))) > 1e-4
    # A random (not constant: LayerNorm removes those) perturbation moves the logit.
    bump = jax.random.normal(jax.random.PRNGKey(7), delta.shape)
    logit = jax.jit(logit_of_grid)
    assert abs(float(logit(bump) - logit(delta))) > 1e-4


def test_position_embeddings_follow_the_input_grid(variables):
    model = _small_vit(image_size=32)           # 4x4 grid stored
    assert variables["params"]["pos_embed"].shape == (1, 17, 24)
    for size in ((48, 48), (16, 40)):
        assert _apply(model, variables, jnp.ones((1,) + size + (3,))).shape == (1, 5)


def test_resample_pos_embed_keeps_the_class_token_and_constant_grids():
    pos = jnp.concatenate([jnp.full((1, 1, 4), 7.0), jnp.full((1, 9, 4), 2.0)], axis=1)
    for method in ("bicubic", "bilinear"):
        out = vit.resample_pos_embed(pos, (5, 2), (3, 3), method=method)
        assert out.shape == (1, 11, 4)
        np.testing.assert_allclose(out[0, 0], 7.0)
        np.testing.assert_allclose(out[0, 1:], 2.0, atol=1e-6)
    assert vit.resample_pos_embed(pos, (3, 3), (3, 3)) is pos


def test_resample_pos_embed_bilinear_matches_a_direct_computation():
    """Bilinear, align_corners=False, edges clamped: torch's F.interpolate without antialias."""
    grid = np.random.default_rng(0).standard_normal((2, 3, 1)).astype(np.float32)
    pos = jnp.asarray(np.concatenate([np.zeros((1, 1, 1)), grid.reshape(1, 6, 1)], axis=1))
    out = np.asarray(vit.resample_pos_embed(pos, (4, 5), (2, 3), "bilinear", antialias=False))

    def axis_weights(n_in, n_out):
        w = np.zeros((n_out, n_in))
        for o in range(n_out):
            src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(np.floor(src)), n_in - 1)
            i1, frac = min(i0 + 1, n_in - 1), src - np.floor(src)
            w[o, i0] += 1 - frac
            w[o, i1] += frac
        return w
    expected = axis_weights(2, 4) @ grid[..., 0] @ axis_weights(3, 5).T
    np.testing.assert_allclose(out[0, 1:, 0].reshape(4, 5), expected, atol=1e-6)


def test_resample_pos_embed_rejects_a_wrong_old_grid():
    with pytest.raises(ValueError, match="old_grid"):
        vit.resample_pos_embed(jnp.zeros((1, 10, 4)), (2, 2), (4, 4))


def test_bfloat16_compute_stays_close_to_float32(variables):
    model32, model16 = _small_vit(), _small_vit(dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 32, 32, 3))
    out32, out16 = _apply(model32, variables, x), _apply(model16, variables, x)
    assert out16.dtype == jnp.float32
    np.testing.assert_allclose(out16, out32, atol=0.1)


def test_dropout_and_drop_path_only_act_in_training(variables):
    model = _small_vit(dropout=0.3, drop_path=0.5)
    x = jax.random.normal(jax.random.PRNGKey(6), (4, 32, 32, 3))
    np.testing.assert_array_equal(_apply(model, variables, x), _apply(model, variables, x))
    train = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key}))
    a = train(variables, x, jax.random.PRNGKey(0))
    b = train(variables, x, jax.random.PRNGKey(1))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4


def test_bad_arguments_name_the_value(variables):
    with pytest.raises(ValueError, match="head='cls'"):
        _small_vit(head="cls").apply(variables, jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="patch_size=8"):
        _small_vit().apply(variables, jnp.zeros((1, 30, 32, 3)))


def test_create_model_builds_vits_from_config_fields():
    cfg = config_schema.defaults().model
    cfg.update(dict(name="deit_tiny_patch16", dtype="bfloat16", vit_head="token",
                    vit_pos_size=160, dropout=0.1, drop_path=0.05))
    model = create_model(cfg, num_classes=7)
    assert isinstance(model, vit.ViT)
    assert (model.embed_dim, model.num_heads, model.head, model.image_size) == (192, 3, "token", 160)
    assert model.dtype == jnp.bfloat16 and model.cam_layer == "block11"
    cfg = config_schema.defaults().model
    cfg.name = "vit_base_patch32"
    plain = create_model(cfg, 7)
    assert (plain.patch_size, plain.head, plain.image_size, plain.dropout) == (32, "gap", 224, 0.0)
