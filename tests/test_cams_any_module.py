"""fer_jax.cams.explain_module on Flax modules that are not fer_jax's.

- A ResNet-18 written here in the style of flax's examples/imagenet ResNet (its own
  classes, auto-named blocks), loaded with a random timm resnet18's weights: maps
  agree per image with pytorch-grad-cam's (Pearson >= 0.99), at a top-level block
  and at a nested layer.
- A small token model with a reshape_transform: Grad-CAM against one computed here
  from the token features and jax.grad.
- A custom target (sum of two logits) against jax.grad of that sum, by hand.
- An NNX module under a linen parent (flax.nnx.bridge.to_linen): Grad-CAM at its
  output against one by hand.
- Methods that need fer_jax's model contract, unknown layers and non-grid layers
  raise errors that say why; the README's example runs.
"""
import functools
import os
import re
from typing import Any, Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.nnx import bridge

from fer_jax import cams, maps as fer_maps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- A ResNet as in flax's examples/imagenet/models.py (not fer_jax's) -------------------
# Two changes, so that it computes what torchvision/timm's ResNet computes: explicit
# symmetric padding (flax's "SAME" pads a stride-2 window only at the end) and no
# axis_name (only eval mode runs here).

class ResNetBlock(nn.Module):
    filters: int
    conv: Any
    norm: Any
    act: Callable
    strides: Tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides, padding=((1, 1), (1, 1)))(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3), padding=((1, 1), (1, 1)))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, padding="VALID",
                                 name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class ResNet(nn.Module):
    stage_sizes: Sequence[int]
    block_cls: Any
    num_classes: int
    num_filters: int = 64

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = functools.partial(nn.Conv, use_bias=False)
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                                 epsilon=1e-5)
        x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
        x = norm(name="bn_init")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = self.block_cls(self.num_filters * 2 ** i, strides=strides, conv=conv,
                                   norm=norm, act=nn.relu)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


ResNet18 = functools.partial(ResNet, stage_sizes=[2, 2, 2, 2], block_cls=ResNetBlock)


def timm_to_flax(state: dict, stage_sizes: Sequence[int]) -> dict:
    """A timm resnet18 state dict -> variables of the ResNet above."""
    t = {k: v.detach().numpy() for k, v in state.items()}
    params, stats = {}, {}

    def conv(torch_name):
        return {"kernel": jnp.asarray(np.transpose(t[torch_name + ".weight"], (2, 3, 1, 0)))}

    def norm(torch_name, flax_path):
        *parents, leaf = flax_path
        p, s = params, stats
        for part in parents:
            p, s = p.setdefault(part, {}), s.setdefault(part, {})
        p[leaf] = {"scale": jnp.asarray(t[torch_name + ".weight"]),
                   "bias": jnp.asarray(t[torch_name + ".bias"])}
        s[leaf] = {"mean": jnp.asarray(t[torch_name + ".running_mean"]),
                   "var": jnp.asarray(t[torch_name + ".running_var"])}

    params["conv_init"] = conv("conv1")
    norm("bn1", ("bn_init",))
    n = 0
    for i, size in enumerate(stage_sizes):
        for j in range(size):
            src, dst = f"layer{i + 1}.{j}", f"ResNetBlock_{n}"
            params.setdefault(dst, {})
            params[dst]["Conv_0"] = conv(f"{src}.conv1")
            params[dst]["Conv_1"] = conv(f"{src}.conv2")
            norm(f"{src}.bn1", (dst, "BatchNorm_0"))
            norm(f"{src}.bn2", (dst, "BatchNorm_1"))
            if f"{src}.downsample.0.weight" in t:
                params[dst]["conv_proj"] = conv(f"{src}.downsample.0")
                norm(f"{src}.downsample.1", (dst, "norm_proj"))
            n += 1
    params["Dense_0"] = {"kernel": jnp.asarray(t["fc.weight"].T), "bias": jnp.asarray(t["fc.bias"])}
    return {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def resnet_pair():
    """A random timm resnet18 and the same network as the flax-example ResNet above."""
    pytest.importorskip("timm")
    pytest.importorskip("pytorch_grad_cam")
    from timm_reference import calibrate_batchnorm, create, randomise
    ref = create("resnet18", seed=9, num_classes=7)
    randomise(ref, seed=10)
    calibrate_batchnorm(ref, 96, seed=11)
    model = ResNet18(num_classes=7)
    variables = timm_to_flax(ref.state_dict(), model.stage_sizes)
    # Every variable the module declares is loaded, with its shape.
    want = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 96, 96, 3)))
    assert jax.tree.map(lambda s: s.shape, want) == jax.tree.map(jnp.shape, variables)
    return ref, model, variables


def test_flax_resnet_is_the_timm_network(resnet_pair):
    """The weight mapping is right (else the parity below would test nothing)."""
    import torch
    ref, model, variables = resnet_pair
    x = np.random.default_rng(5).standard_normal((2, 3, 96, 96)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    got = model.apply(variables, jnp.asarray(np.transpose(x, (0, 2, 3, 1))), train=False)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-3)


PARITY_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam")


@pytest.mark.parametrize("flax_layer,torch_layer", [
    ("ResNetBlock_7", lambda ref: ref.layer4),                       # a top-level block
    # Nested, as a tuple. Not bn2: timm adds the shortcut to its output in place, which
    # changes the activations pytorch-grad-cam stored (its reference would be wrong there).
    (("ResNetBlock_5", "Conv_1"), lambda ref: ref.layer3[1].conv2),
])
def test_flax_resnet_maps_match_pytorch_grad_cam(resnet_pair, flax_layer, torch_layer,
                                                 monkeypatch):
    """Eigen-CAM's sign corrected in pytorch-grad-cam as in tests/test_cam_parity.py."""
    from test_cam_parity import assert_maps_agree, reference_maps, sign_correct_eigen_cam
    sign_correct_eigen_cam(monkeypatch)
    ref, model, variables = resnet_pair
    x = np.random.default_rng(0).standard_normal((3, 3, 96, 96)).astype(np.float32)
    classes = [0, 3, 6]
    run = jax.jit(lambda v, x, c: cams.explain_module(
        model, v, x, c, target_layers=[flax_layer], methods=PARITY_METHODS,
        apply_kwargs={"train": False}))
    ours = run(variables, jnp.asarray(np.transpose(x, (0, 2, 3, 1))), jnp.asarray(classes))
    for method in PARITY_METHODS:
        want = reference_maps(method, ref, [torch_layer(ref)], x, classes)
        assert_maps_agree(np.asarray(ours[method]), want, f"flax ResNet {flax_layer} {method}")


def test_flax_resnet_score_cam_matches_pytorch_grad_cam(resnet_pair):
    """Score-CAM's masked forwards go through the module's own apply: one image, 256
    channels of ResNetBlock_5 (timm's layer3)."""
    from test_cam_parity import assert_maps_agree, reference_maps
    ref, model, variables = resnet_pair
    # 96 px, not 64: this ResNet's last stage would be 2 x 2, where XLA:CPU's convolution
    # is some 25 times slower (fer_jax.models.small_input_conv; this network is not ours).
    x = np.random.default_rng(2).standard_normal((1, 3, 96, 96)).astype(np.float32)
    ours = cams.explain_module(model, variables, jnp.asarray(np.transpose(x, (0, 2, 3, 1))),
                               jnp.array([4]), ["ResNetBlock_5"], ["scorecam"],
                               apply_kwargs={"train": False}, score_batch=64)
    assert_maps_agree(np.asarray(ours["scorecam"]),
                      reference_maps("scorecam", ref, [ref.layer3], x, [4]),
                      "flax ResNet ResNetBlock_5 scorecam")


# --- A token model: (B, N, D) layers, a reshape_transform ---------------------------------

class Block(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, x):
        x = x + nn.SelfAttention(num_heads=2, qkv_features=self.dim)(nn.LayerNorm()(x))
        h = nn.gelu(nn.Dense(2 * self.dim)(nn.LayerNorm()(x)))
        return x + nn.Dense(self.dim)(h)


class TokenNet(nn.Module):
    """Patch embedding, a class token, `depth` blocks, a head on the class token."""
    patch: int = 8
    dim: int = 16
    depth: int = 2
    num_classes: int = 5

    def setup(self):
        self.embed = nn.Conv(self.dim, (self.patch, self.patch), strides=self.patch,
                             padding="VALID")
        self.cls = self.param("cls", nn.initializers.normal(1.0), (1, 1, self.dim))
        self.blocks = [Block(self.dim) for _ in range(self.depth)]   # paths "blocks_{i}"
        self.norm = nn.LayerNorm()
        self.head = nn.Dense(self.num_classes)

    def tokens(self, x, upto: int):
        """(B, H, W, 3) -> (B, 1 + h w, dim) after the first `upto` blocks."""
        p = self.embed(x)
        t = p.reshape(p.shape[0], -1, self.dim)
        t = jnp.concatenate([jnp.broadcast_to(self.cls, (t.shape[0], 1, self.dim)), t], axis=1)
        for block in self.blocks[:upto]:
            t = block(t)
        return t

    def logits_from(self, t, start: int):
        """Tokens after block `start` - 1 -> (B, num_classes) logits."""
        for block in self.blocks[start:]:
            t = block(t)
        return self.head(self.norm(t)[:, 0])

    def __call__(self, x):
        return self.logits_from(self.tokens(x, self.depth), self.depth)


def tokens_to_grid(tokens: jnp.ndarray) -> jnp.ndarray:
    """(B, 1 + h w, D) -> (B, h, w, D): drop the class token (square grid)."""
    b, n, d = tokens.shape
    side = int(round((n - 1) ** 0.5))
    return tokens[:, 1:].reshape(b, side, side, d)


@pytest.fixture(scope="module")
def token_net():
    net = TokenNet()
    images = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
    variables = net.init(jax.random.key(1), images)
    return net, variables, images


def grad_cam_by_hand(features: jnp.ndarray, logits_of: Callable, score: Callable,
                     size: Tuple[int, int], grid: Callable = lambda a: a) -> np.ndarray:
    """Grad-CAM without fer_jax's capture: F = grid(features), G = grid(jax.grad of
    sum_b score(logits_of(features))_b); ReLU(sum_c mean_hw(G) F), min-max, bilinear
    (half-pixel) to `size`, as the engine documents: (B, *size)."""
    grads = jax.grad(lambda t: jnp.sum(score(logits_of(t))))(features)
    f, g = np.asarray(grid(features)), np.asarray(grid(grads))
    cam = np.maximum(np.einsum("bhwc,bc->bhw", f, g.mean(axis=(1, 2))), 0.0)
    lo, hi = cam.min(axis=(1, 2), keepdims=True), cam.max(axis=(1, 2), keepdims=True)
    cam = (cam - lo) / (hi - lo)
    return np.asarray(jax.image.resize(cam, (cam.shape[0],) + tuple(size), "linear"))


def token_grad_cam_by_hand(net, variables, images, score) -> np.ndarray:
    """Grad-CAM at blocks_0 of TokenNet, its tokens laid out by tokens_to_grid."""
    tokens = net.apply(variables, images, 1, method=TokenNet.tokens)
    return grad_cam_by_hand(tokens, lambda t: net.apply(variables, t, 1,
                                                        method=TokenNet.logits_from),
                            score, images.shape[1:3], grid=tokens_to_grid)


def test_token_model_grad_cam_with_reshape_transform_matches_a_computation_by_hand(token_net):
    net, variables, images = token_net
    classes = jnp.array([0, 2, 4])
    ours = cams.explain_module(net, variables, images, classes, target_layers=["blocks_0"],
                               methods=["gradcam"], reshape_transform=tokens_to_grid)
    want = token_grad_cam_by_hand(net, variables, images,
                                  lambda out: jnp.take_along_axis(out, classes[:, None], 1)[:, 0])
    assert ours["gradcam"].shape == (3, 32, 32)
    np.testing.assert_allclose(np.asarray(ours["gradcam"]), want, atol=1e-4)


def test_custom_target_matches_jax_grad_of_that_target(token_net):
    net, variables, images = token_net
    two = lambda out, classes: out[:, 1] + out[:, 3]   # noqa: E731 (classes unused)
    kwargs = dict(target_layers="blocks_0", methods=["gradcam"],   # one layer, a bare string
                  reshape_transform=tokens_to_grid)
    classes = jnp.zeros(3, jnp.int32)
    ours = cams.explain_module(net, variables, images, classes, target=two, **kwargs)["gradcam"]
    want = token_grad_cam_by_hand(net, variables, images, lambda out: two(out, None))
    np.testing.assert_allclose(np.asarray(ours), want, atol=1e-4)
    # The target matters: the default (logit of class 0) gives another map.
    default = cams.explain_module(net, variables, images, classes, **kwargs)["gradcam"]
    assert np.max(np.abs(np.asarray(default) - want)) > 0.1


def test_score_cam_and_eigen_cam_run_on_token_layers(token_net):
    """The forward-only methods read the reshaped grid too: maps of the input's size in [0, 1]."""
    net, variables, images = token_net
    out = cams.explain_module(net, variables, images, jnp.array([1, 2, 3]), ("blocks_1",),
                              ["scorecam", "eigencam", "random", "centre"],
                              reshape_transform=tokens_to_grid, score_batch=16)
    for name, m in out.items():
        m = np.asarray(m)
        assert m.shape == (3, 32, 32) and m.min() >= 0.0 and m.max() <= 1.0, name
        assert m.std() > 0.01, f"{name}: flat map"
    # Eigen-CAM is the grid's first principal component, centred, sign fixed, ReLU.
    t = net.apply(variables, images, 2, method=TokenNet.tokens)
    from fer_jax.cams.eigen import first_component
    want = fer_maps.upsample_cam(jnp.maximum(first_component(tokens_to_grid(t)), 0), (32, 32))
    np.testing.assert_allclose(np.asarray(out["eigencam"]), np.asarray(want), atol=1e-5)


# --- An NNX module through flax.nnx.bridge ------------------------------------------------

class NNXFeatures(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.conv(x))


class BridgedNet(nn.Module):
    """NNX features under a linen parent: the bridged module's output is a layer
    ("features"); the layers inside the NNX module are not linen modules, so not paths."""

    def setup(self):
        self.features = bridge.to_linen(NNXFeatures)
        self.head = nn.Dense(4)

    def logits_from(self, f):
        return self.head(jnp.mean(f, axis=(1, 2)))

    def __call__(self, x):
        return self.logits_from(self.features(x))


def test_nnx_module_through_the_linen_bridge_matches_a_computation_by_hand():
    net = BridgedNet()
    images = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    variables = net.init(jax.random.key(3), images)
    classes = jnp.array([1, 3])
    ours = cams.explain_module(net, variables, images, classes, ["features"], ["gradcam"])
    feats = net.apply(variables, images, method=lambda m, x: m.features(x))
    want = grad_cam_by_hand(feats, lambda f: net.apply(variables, f, method=BridgedNet.logits_from),
                            lambda out: jnp.take_along_axis(out, classes[:, None], 1)[:, 0],
                            images.shape[1:3])
    np.testing.assert_allclose(np.asarray(ours["gradcam"]), want, atol=1e-4)


# --- Errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("method,needs", [
    ("cam", "linear classifier"), ("rollout", "attention probabilities"),
    ("wildcat", "training-time head"), ("cls_attention", "attention probabilities")])
def test_methods_needing_the_model_contract_say_what_they_need(token_net, method, needs):
    net, variables, images = token_net
    with pytest.raises(ValueError, match=rf"CAM method '{method}' does not apply.*{needs}"):
        cams.explain_module(net, variables, images, jnp.zeros(3, jnp.int32), ["blocks_0"],
                            ["gradcam", method], reshape_transform=tokens_to_grid)


def test_module_methods_are_those_that_need_no_contract():
    assert cams.module_methods() == ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam",
                                     "scorecam", "eigencam", "random", "centre"]


def test_unknown_layer_and_token_layer_without_reshape_are_explained(token_net):
    net, variables, images = token_net
    classes = jnp.zeros(3, jnp.int32)
    with pytest.raises(ValueError, match=r"'blocks_9' is not a submodule.*'blocks_0'"):
        cams.explain_module(net, variables, images, classes, ["blocks_9"], ["gradcam"])
    with pytest.raises(ValueError, match=r"'blocks_0'.*\(3, 17, 16\).*reshape_transform"):
        cams.explain_module(net, variables, images, classes, ["blocks_0"], ["gradcam"])
    with pytest.raises(ValueError, match="unknown CAM method 'gradcan'"):
        cams.explain_module(net, variables, images, classes, ["blocks_0"], ["gradcan"],
                            reshape_transform=tokens_to_grid)


class Shared(nn.Module):
    """One Dense applied twice (shared weights)."""

    @nn.compact
    def __call__(self, x):
        dense = nn.Dense(3, name="shared")
        return nn.Dense(2)(jnp.mean(dense(nn.relu(dense(x))), axis=(1, 2)))


def test_a_layer_called_twice_is_refused():
    net, x = Shared(), jnp.ones((1, 4, 4, 3))
    variables = net.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="'shared' is called 2 times"):
        cams.explain_module(net, variables, x, jnp.zeros(1, jnp.int32), ["shared"], ["gradcam"])


def test_module_layers_names_paths_as_module_path(token_net):
    net, variables, images = token_net
    layers = cams.module_layers(net.apply, variables, images)
    assert layers["blocks_1"] == (3, 17, 16)
    assert layers["blocks_0/SelfAttention_0"] == (3, 17, 16)
    assert layers["embed"] == (3, 4, 4, 16)


# --- The README's example ------------------------------------------------------------------

def readme_example() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## CAMs for your own Flax model", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_example_runs():
    scope: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)   # noqa: S102
    maps = scope["maps"]
    assert sorted(maps) == ["eigencam", "gradcam", "layercam"]
    for m in maps.values():
        assert m.shape == (2, 64, 64) and float(m.min()) >= 0.0 and float(m.max()) <= 1.0
