"""CAMs from the features F and gradients G = d score / d F of one layer.

All of them come from the same forward and backward pass (the engine takes
one backward for every selected layer). Formulas as in pytorch-grad-cam, which
the parity tests compare against; sums and means run over the h, w positions.
The engine fills the fields a method declares in `needs` (features, gradients),
so the `assert ... is not None` below hold by construction (they narrow for mypy).
"""
import jax.numpy as jnp

from fer_jax.cams import base

_NEEDS = frozenset({base.FEATURES, base.GRADIENTS})
_IN_PAPER = ("gradcam", "gradcam++", "layercam")   # the paper's gradient rows


def _channel_weighted(features: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """(B, h, w, C) features times (B, C) channel weights."""
    return features * weights[:, None, None, :]


def grad_cam(x: base.LayerInputs) -> jnp.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): channel weights = mean_hw(G)."""
    assert x.features is not None and x.gradients is not None
    return _channel_weighted(x.features, jnp.mean(x.gradients, axis=(1, 2)))


def grad_cam_plus_plus(x: base.LayerInputs) -> jnp.ndarray:
    """Grad-CAM++ (Chattopadhay et al. 2018), the closed form of its exp-score weights.

    alpha = G^2 / (2 G^2 + sum_hw(F) G^3 + 1e-6), 0 where G = 0;
    channel weights = sum_hw(alpha * ReLU(G)).
    """
    g, f = x.gradients, x.features
    assert g is not None and f is not None
    g2 = g * g
    total = jnp.sum(f, axis=(1, 2), keepdims=True)
    alpha = g2 / (2.0 * g2 + total * g2 * g + 1e-6)
    alpha = jnp.where(g != 0.0, alpha, 0.0)
    return _channel_weighted(f, jnp.sum(alpha * jnp.maximum(g, 0.0), axis=(1, 2)))


def xgrad_cam(x: base.LayerInputs) -> jnp.ndarray:
    """XGrad-CAM (Fu et al. 2020): channel weights = sum_hw(G F) / (sum_hw(F) + 1e-7)."""
    f, g = x.features, x.gradients
    assert f is not None and g is not None
    total = jnp.sum(f, axis=(1, 2), keepdims=True)
    return _channel_weighted(f, jnp.sum(g * f / (total + 1e-7), axis=(1, 2)))


def hires_cam(x: base.LayerInputs) -> jnp.ndarray:
    """HiResCAM (Draelos & Carin 2020): G * F per position (no spatial pooling of G)."""
    assert x.features is not None and x.gradients is not None
    return x.gradients * x.features


def layer_cam(x: base.LayerInputs) -> jnp.ndarray:
    """LayerCAM (Jiang et al. 2021): ReLU(G) * F per position."""
    assert x.features is not None and x.gradients is not None
    return jnp.maximum(x.gradients, 0.0) * x.features


for _name, _fn, _summary in (
        ("gradcam", grad_cam, "Selvaraju et al. 2017: channels weighted by their mean gradient"),
        ("gradcam++", grad_cam_plus_plus,
         "Chattopadhay et al. 2018: higher-order gradient weights, sharper for several parts"),
        ("xgradcam", xgrad_cam, "Fu et al. 2020: gradient weights normalised by activation"),
        ("hirescam", hires_cam,
         "Draelos & Carin 2020: gradient times activation per position (no pooling)"),
        ("layercam", layer_cam, "Jiang et al. 2021: positive gradients times activation per "
                                "position")):
    base.register(base.CamMethod(name=_name, summary=_summary, fn=_fn, needs=_NEEDS,
                                 in_paper=_name in _IN_PAPER))
