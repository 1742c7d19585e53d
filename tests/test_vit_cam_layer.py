"""Which layer a ViT's CAMs read, and why (docs/method.md, "CAM methods").

Two properties of a pre-norm ViT decide it, each checked here against an
independent computation:
- after the final LayerNorm, a GAP-linear head has the gradient W[:, k] / (h w) at
  every token, so Grad-CAM, HiResCAM and XGrad-CAM at `encoder_norm_grid` are CAM;
- every consumer of a block's output is a LayerNorm, which ignores a constant added
  to a token's channels, so the gradient at any `block{i}` sums to 0 over channels
  and Grad-CAM there cannot see the channel mean (what the alignment loss shapes),
  while LayerCAM's ReLU(G) can.
Hence the per-layer methods default to the last block (`default_cam_layers`), and
`cam` keeps the head's input (`cam_layer`).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import capture, cams, models
from fer_jax.cams import base, gradient
from fer_jax.models import vit

_DEPTH = 3
_GRID = (4, 4)          # 32 px, patch 8


def _small_vit(**kwargs) -> vit.ViT:
    defaults = dict(num_classes=5, patch_size=8, embed_dim=24, depth=_DEPTH, num_heads=3,
                    image_size=32)
    defaults.update(kwargs)
    return vit.ViT(**defaults)


@pytest.fixture(scope="module")
def setup():
    """A GAP-head ViT whose LayerNorm scales, biases and class token are not at their
    initial 1 / 0 / ~0 (a trained model's are not), a batch, and its target classes."""
    model = _small_vit()
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 3))
    variables = models.initial_variables(model, jax.random.PRNGKey(0), 32)
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    leaves = [leaf + 0.3 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    variables = jax.tree_util.tree_unflatten(tree, leaves)
    classes = jnp.array([0, 3, 4])
    return model, variables, x, classes


def _probe(model, variables, x, classes, layers):
    return jax.jit(lambda v, x, c: capture.probe(model.apply, v, x, c, feature_layers=layers,
                                                 grad_layers=layers))(variables, x, classes)


def _logits_with(model, variables, x, layer, change):
    """Logits when `change` (grid (B, h, w, D) -> grid) is applied to `layer`'s output."""
    def intercept(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and "/".join(context.module.path) == layer:
            out = change(out)
        return out

    def run(v, x):
        with nn.intercept_methods(intercept):
            return model.apply(v, x, train=False)
    return np.asarray(jax.jit(run)(variables, x), np.float64)


def test_gradient_after_the_final_norm_is_the_head_column_so_gradient_maps_are_cam(setup):
    model, variables, x, classes = setup
    layer = model.cam_layer
    assert layer == "encoder_norm_grid"
    probe = _probe(model, variables, x, classes, (layer,))
    kernel = np.asarray(variables["params"]["head"]["kernel"], np.float64)      # (D, K)
    column = kernel[:, np.asarray(classes)].T                                   # (B, D)
    hw = _GRID[0] * _GRID[1]
    g = np.asarray(probe.gradients[layer], np.float64)
    np.testing.assert_allclose(g, np.broadcast_to(column[:, None, None] / hw, g.shape),
                               rtol=1e-6, atol=1e-9)
    # The maps before ReLU and min-max: CAM / (h w), by an independent einsum.
    f = np.asarray(probe.features[layer], np.float64)
    cam = np.einsum("bhwd,bd->bhw", f, column)
    inputs = base.LayerInputs(features=probe.features[layer], gradients=probe.gradients[layer])
    for fn in (gradient.grad_cam, gradient.hires_cam):
        np.testing.assert_allclose(np.asarray(fn(inputs).sum(-1)), cam / hw, rtol=1e-4,
                                   atol=1e-6 * np.abs(cam).max())


def _assert_logits_ignore(model, variables, x, layer, change, one_channel) -> None:
    """`change` of a token at `layer` leaves the logits unchanged, while the same change
    on one channel alone does move them (so the comparison can fail)."""
    ref = _logits_with(model, variables, x, layer, lambda g: g)
    changed = _logits_with(model, variables, x, layer, change)
    one = _logits_with(model, variables, x, layer, one_channel)
    assert np.abs(one - ref).max() > 1e-3
    assert np.abs(changed - ref).max() < 1e-3 * np.abs(one - ref).max()


@pytest.mark.parametrize("block", range(_DEPTH))
def test_block_gradients_sum_to_zero_over_channels(setup, block):
    """Adding a constant to a token's channels leaves the logits unchanged (every reader
    of the residual stream is a LayerNorm), so d logit / d token is orthogonal to 1."""
    model, variables, x, classes = setup
    layer = f"block{block}"
    _assert_logits_ignore(model, variables, x, layer, lambda g: g.at[:, 1, 2].add(5.0),
                          lambda g: g.at[:, 1, 2, 0].add(5.0))

    probe = _probe(model, variables, x, classes, (layer,))
    g = np.asarray(probe.gradients[layer], np.float64)
    norm = np.linalg.norm(g, axis=-1) * np.sqrt(g.shape[-1])       # |G_t| |1|
    assert np.all(np.abs(g.sum(-1)) <= 1e-4 * norm.max())


def test_last_block_gradient_is_orthogonal_to_the_features(setup):
    """The last block feeds only the final LayerNorm, which ignores each token's scale:
    G_t . F_t = 0, so HiResCAM there is rounding noise."""
    model, variables, x, classes = setup
    layer = f"block{_DEPTH - 1}"
    _assert_logits_ignore(model, variables, x, layer, lambda g: g.at[:, 0, 3].multiply(3.0),
                          lambda g: g.at[:, 0, 3, 0].multiply(3.0))
    probe = _probe(model, variables, x, classes, (layer,))
    g = np.asarray(probe.gradients[layer], np.float64)
    f = np.asarray(probe.features[layer], np.float64)
    cos = np.abs((g * f).sum(-1)) / (np.linalg.norm(g, axis=-1) * np.linalg.norm(f, axis=-1))
    assert cos.max() < 1e-4


def test_grad_cam_at_a_block_ignores_the_channel_mean_and_layer_cam_does_not(setup):
    model, variables, x, classes = setup
    layer = f"block{_DEPTH - 1}"
    probe = _probe(model, variables, x, classes, (layer,))
    f = np.asarray(probe.features[layer], np.float64)
    g = np.asarray(probe.gradients[layer], np.float64)
    centred = f - f.mean(-1, keepdims=True)

    def maps(fn, features):
        inputs = base.LayerInputs(features=jnp.asarray(features, jnp.float32),
                                  gradients=jnp.asarray(g, jnp.float32))
        return np.asarray(fn(inputs).sum(-1), np.float64)

    # Grad-CAM: sum_c mean_t(G_c) F_tc; its weights sum to 0, so the token means drop out.
    grad_cam = np.einsum("bhwc,bc->bhw", f, g.mean((1, 2)))
    np.testing.assert_allclose(maps(gradient.grad_cam, f), grad_cam,
                               atol=1e-5 * np.abs(grad_cam).max())
    np.testing.assert_allclose(maps(gradient.grad_cam, centred), grad_cam,
                               atol=1e-4 * np.abs(grad_cam).max())
    # LayerCAM weighs each token by ReLU(G_t), whose channel sum is positive: it keeps
    # mean_c(F_t) * sum_c ReLU(G_tc).
    kept = maps(gradient.layer_cam, f) - maps(gradient.layer_cam, centred)
    expected = f.mean(-1) * np.maximum(g, 0.0).sum(-1)
    np.testing.assert_allclose(kept, expected, atol=1e-4 * np.abs(expected).max())
    assert np.abs(expected).max() > 0.1 * np.abs(maps(gradient.layer_cam, f)).max()


@pytest.mark.parametrize("head", ["gap", "token", "tscam"])
def test_per_layer_methods_default_to_the_last_block(head):
    model = _small_vit(head=head)
    assert model.default_cam_layers == (f"block{_DEPTH - 1}",)
    assert model.cam_layer == ("block2" if head == "token" else "encoder_norm_grid")
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    layers = capture.spatial_layers(model, shapes, (32, 32, 3))
    capture.check_layers(model.default_cam_layers + (model.cam_layer,), layers)


def test_spec_for_uses_the_models_default_cam_layers():
    model = _small_vit()
    spec = cams.spec_for(model, methods=("cam", "gradcam", "layercam"))
    assert spec.layers == model.default_cam_layers
    assert spec.same_as == ()     # gradcam is not CAM at the last block
    # `cam` still reads the head's input.
    assert cams.engine._layers_of(base.REGISTRY["cam"], model, spec) == ("encoder_norm_grid",)
