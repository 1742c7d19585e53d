"""Convolutions of 1- and 2-pixel-wide inputs go through explicit patches on CPU, with
XLA's convolution's values and gradients; every other convolution is XLA's own."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.models import resnet, small_input_conv
from test_wsol import random_variables

NHWC = ("NHWC", "HWIO", "NHWC")


def _primitives(fn, *args):
    return {str(e.primitive) for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


def _conv_by_hand(x, w, strides, padding):
    """The convolution as a loop over output pixels and kernel taps, in float64."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), padding[0], padding[1], (0, 0)))
    w = np.asarray(w, np.float64)
    kh, kw = w.shape[:2]
    oh = (x.shape[1] - kh) // strides[0] + 1
    ow = (x.shape[2] - kw) // strides[1] + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i in range(oh):
        for j in range(ow):
            window = x[:, i * strides[0]:i * strides[0] + kh, j * strides[1]:j * strides[1] + kw]
            out[:, i, j] = np.einsum("bhwc,hwco->bo", window, w)
    return out


@pytest.mark.parametrize("side,kernel,strides,padding", [
    (2, 3, (1, 1), ((1, 1), (1, 1))),      # a ResNet's 3x3 conv on a 2 x 2 stage4
    (2, 3, (2, 2), ((1, 1), (1, 1))),      # its strided first conv: 2 x 2 -> 1 x 1
    (1, 3, (1, 1), ((1, 1), (1, 1))),
    (2, 2, (1, 1), ((0, 1), (1, 0))),      # asymmetric padding, even kernel
])
def test_small_inputs_take_patches_and_match_the_convolution(side, kernel, strides, padding):
    rng = np.random.default_rng(side + kernel)
    x = jnp.asarray(rng.standard_normal((3, side, side, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, kernel, 8, 5)), jnp.float32)

    def ours(x, w):
        return small_input_conv.conv_general_dilated(x, w, strides, padding,
                                                     dimension_numbers=NHWC)

    def xla(x, w):
        return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)

    assert "conv_general_dilated" not in _primitives(ours, x, w)
    np.testing.assert_allclose(ours(x, w), _conv_by_hand(x, w, strides, padding),
                               rtol=1e-5, atol=1e-5)
    # Gradients with respect to input and kernel, as XLA's convolution gives them.
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
    for got, want in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(xla), (0, 1))(x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["3 pixels", "1x1 kernel", "SAME", "dilated", "groups",
                                  "NCHW"])
def test_every_other_convolution_is_xlas(case):
    side = 3 if case == "3 pixels" else 2
    kernel = 1 if case == "1x1 kernel" else 3
    x = jnp.ones((1, side, side, 4)) if case != "NCHW" else jnp.ones((1, 4, side, side))
    w = jnp.ones((kernel, kernel, 2 if case == "groups" else 4, 4))
    kwargs = dict(dimension_numbers=("NCHW", "HWIO", "NCHW") if case == "NCHW" else NHWC,
                  rhs_dilation=(2, 2) if case == "dilated" else None,
                  feature_group_count=2 if case == "groups" else 1)
    padding = "SAME" if case == "SAME" else ((1, 1), (1, 1))
    fn = lambda x, w: small_input_conv.conv_general_dilated(x, w, (1, 1), padding, **kwargs)
    assert "conv_general_dilated" in _primitives(fn, x, w)
    want = jax.lax.conv_general_dilated(x, w, (1, 1), padding, **kwargs)
    np.testing.assert_array_equal(fn(x, w), want)


def test_resnet_at_64_px_convolves_its_2x2_stage_by_patches_to_the_same_logits(monkeypatch):
    """At 64 px a ResNet-18's stage4 is 2 x 2: three of its convolutions (those whose input
    is 2 x 2; the first block's strided conv and shortcut read stage3's 4 x 4) are patch
    products, the other 17 of the 20 stay XLA's; the logits are those of XLA's alone."""
    model = resnet.ResNet18(num_classes=3, width=4)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)
    variables = random_variables(model, x.shape)
    forward = jax.jit(lambda v, x: model.apply(v, x))
    text = str(jax.make_jaxpr(forward)(variables, x))
    assert text.count("conv_general_dilated[") == 17
    ours = forward(variables, x)
    monkeypatch.setattr(small_input_conv, "MAX_SIDE", 0)
    forward = jax.jit(lambda v, x: model.apply(v, x))      # traced again, XLA's convs only
    assert str(jax.make_jaxpr(forward)(variables, x)).count("conv_general_dilated[") == 20
    np.testing.assert_allclose(ours, forward(variables, x), rtol=1e-5, atol=1e-5)
