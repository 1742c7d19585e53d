"""fer_jax.capture: layers by name, attention taps, gradients at a layer in one pass."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import capture
from fer_jax.config_schema import ConfigError


def test_unknown_layer_error_lists_valid_layers():
    with pytest.raises(ConfigError, match=r"unknown layer 'stage9'.*stage4"):
        capture.check_layers(["stage9"], {"stem": (1, 8, 8, 4), "stage4": (1, 2, 2, 8)})


def test_feature_layers_of_a_resnet_in_model_order(resnet_case):
    model, v, _, _ = resnet_case
    layers = capture.spatial_layers(model, v, (32, 32, 3))
    top = [n for n in layers if "/" not in n]
    assert top == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert layers["stage4"] == (1, 4, 4, 32)


def test_vit_attention_probabilities_are_their_own_kind(vit_case):
    model, v, _, _ = vit_case
    features = capture.spatial_layers(model, v, (32, 32, 3))
    attention = capture.capturable_layers(model, v, (32, 32, 3), capture.ATTENTION)
    assert list(attention) == list(model.attention_layers) == [
        "encoder0/attn/probs", "encoder1/attn/probs", "encoder2/attn/probs"]
    assert attention["encoder0/attn/probs"] == (1, 3, 17, 17)   # (B, heads, 1 + 4*4, same)
    assert not set(attention) & set(features) and "block1" in features


def test_attention_tap_holds_the_softmax_of_the_blocks_queries_and_keys(vit_case):
    """Recomputed in NumPy from the captured norm1 output and the query/key kernels."""
    model, v, x, _ = vit_case
    names = ("encoder0/norm1", "encoder0/attn/probs")
    _, st = model.apply(v, x, capture_intermediates=capture.capture_filter(names),
                        mutable=["intermediates"])
    tokens = np.asarray(capture.captured(st["intermediates"], "encoder0/norm1"), np.float64)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"]["encoder0"]["attn"])
    q = np.einsum("bnd,dhk->bnhk", tokens, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("bnd,dhk->bnhk", tokens, p["key"]["kernel"]) + p["key"]["bias"]
    logits = np.einsum("bqhk,bphk->bhqp", q, k) / np.sqrt(q.shape[-1])
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    probs = np.asarray(capture.captured(st["intermediates"], "encoder0/attn/probs"))
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_gradient_at_a_gap_heads_input_is_the_head_weight_over_the_area(resnet_case):
    model, v, x, labels = resnet_case
    probe = capture.probe(model.apply, v, x, labels, ("stage4",), ("stage4",))
    grads = np.asarray(probe.gradients["stage4"])
    h, w = grads.shape[1:3]
    kernel = np.asarray(v["params"]["head"]["kernel"])  # (C, K)
    expected = kernel[:, np.asarray(labels)].T[:, None, None, :] / (h * w)
    np.testing.assert_allclose(grads, np.broadcast_to(expected, grads.shape), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(probe.logits), np.asarray(model.apply(v, x)), atol=1e-5)


def test_gradients_of_several_layers_from_one_pass_equal_forward_mode_derivatives(resnet_case):
    """d score / d stage3 from one reverse pass (with stage4's), checked by a forward-mode
    derivative (jvp) of the score along a random perturbation of stage3's output."""
    model, v, x, labels = resnet_case
    probe = capture.probe(model.apply, v, x, labels, (), ("stage3", "stage4"))
    g3 = np.asarray(probe.gradients["stage3"])
    direction = np.random.default_rng(0).normal(size=g3.shape).astype(np.float32)

    def score(eps):
        def bump(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and "/".join(context.module.path) == "stage3":
                out = out + eps * direction
            return out
        with nn.intercept_methods(bump):
            logits = model.apply(v, x)
        return jnp.sum(jnp.take_along_axis(logits, labels[:, None], 1))

    _, forward_mode = jax.jvp(score, (0.0,), (1.0,))
    np.testing.assert_allclose(float(forward_mode), float((g3 * direction).sum()), rtol=1e-4)
