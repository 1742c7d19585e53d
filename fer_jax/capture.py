"""Reading a model's layers without changing it: capture by name, gradients at a layer.

Every fer_jax model exposes stable module paths ("stage4", "block5",
"encoder3/attn/probs", ...). This module finds them, checks names users give,
captures their outputs with linen's `capture_intermediates`, and takes the
gradient of a class score with respect to any of them through a method
interceptor that adds a zero tensor to the layer's output (the model's code and
numbers stay the same).

Two kinds of capturable layers:
- "features": outputs of shape (B, h, w, C) (ResNet stages, ViT token grids);
  the alignment loss, ATT-COS and the CAM methods read them.
- "attention": attention probabilities (B, heads, N, N) of ViT blocks, exposed
  by a parameter-free tap module whose class sets `capture_kind = "attention"`.
"""
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax.errors import ConfigError
from fer_jax.models import contract

FEATURES = contract.FEATURES
ATTENTION = contract.ATTENTION


def capture_filter(layers: Sequence[str]) -> Callable[[nn.Module, str], bool]:
    """`capture_intermediates` filter keeping the `__call__` outputs of `layers`.

    Layer names are module paths below the root, e.g. "stage4" or "stage4/block1".
    """
    wanted = frozenset(layers)
    return lambda mdl, method: method == "__call__" and "/".join(mdl.path) in wanted


def captured(intermediates: Mapping[str, Any], layer: str) -> jnp.ndarray:
    """The output of `layer` from an `intermediates` collection."""
    node = intermediates
    for part in layer.split("/"):
        node = node[part]
    return node["__call__"][0]


def capturable_layers(model: contract.ExplainableModel, variables: Mapping[str, Any],
                      image_shape: Tuple[int, int, int], kind: str = FEATURES
                      ) -> Dict[str, Tuple[int, ...]]:
    """Layers of `model` of one kind, in call order: {name: output shape (1, ...)}.

    kind: FEATURES ((B, h, w, C) outputs of modules that are not taps of another
    kind) or ATTENTION (attention probabilities (B, heads, N, N)). Found by
    tracing one abstract forward pass (no FLOPs spent).
    """
    if kind not in (FEATURES, ATTENTION):
        raise ValueError(f"kind={kind!r}: expected {FEATURES!r} or {ATTENTION!r}")
    x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
    order: List[str] = []  # the filter sees modules in call order: keep the model's order
    kinds: Dict[str, str] = {}

    def record(mdl: nn.Module, method: str) -> bool:
        if method == "__call__" and mdl.path:
            name = "/".join(mdl.path)
            order.append(name)
            kinds[name] = contract.layer_kind(mdl)
        return True

    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=record,
                                 mutable=["intermediates"]), variables, x)
    found: Dict[str, Tuple[int, ...]] = {}
    for name in dict.fromkeys(order):
        out = captured(state["intermediates"], name)
        if kinds[name] == kind and hasattr(out, "shape") and len(out.shape) == 4:
            found[name] = tuple(out.shape)
    return found


def spatial_layers(model: contract.ExplainableModel, variables: Mapping[str, Any],
                   image_shape: Tuple[int, int, int]) -> Dict[str, Tuple[int, ...]]:
    """All (B, h, w, C) feature layers of `model`: {name: output shape}."""
    return capturable_layers(model, variables, image_shape, FEATURES)


def check_layers(layers: Sequence[str], available: Mapping[str, Tuple[int, ...]],
                 key: str = "align.layers") -> None:
    """Raises ConfigError naming any layer that is not a (B, h, w, C) layer of the model."""
    bad = [name for name in layers if name not in available]
    if bad:
        top = [n for n in available if "/" not in n]
        nested = next((n for n in available if "/" in n), None)
        hint = f" (or nested paths such as {nested!r}; {len(available)} in all)" if nested else ""
        raise ConfigError(f"config.{key}: unknown layer {bad[0]!r}; valid layers: {top}{hint}")


class Probe(NamedTuple):
    """What one eval-mode forward (and backward) pass read off the model.

    logits (B, K) float32 (the model's outputs, any pytree, each leaf float32);
    features {layer: (B, h, w, C) float32};
    gradients {layer: d sum_b score_b / d features, same shape} for the layers
    asked for (empty when none); taps {layer: output} of further captured layers.
    """
    logits: jnp.ndarray
    features: Dict[str, jnp.ndarray]
    gradients: Dict[str, jnp.ndarray]
    taps: Dict[str, jnp.ndarray]


def class_logit(outputs: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
    """The default target: (B, K) logits, (B,) int classes -> (B,) logits[b, classes[b]]."""
    return jnp.take_along_axis(outputs, classes[:, None].astype(jnp.int32), axis=1)[:, 0]


def probe(apply_fn: Callable, variables: Mapping[str, Any], images: jnp.ndarray,
          classes: jnp.ndarray, feature_layers: Sequence[str], grad_layers: Sequence[str] = (),
          tap_layers: Sequence[str] = (),
          target: Callable[[Any, jnp.ndarray], jnp.ndarray] = class_logit) -> Probe:
    """One eval-mode forward, and one backward if `grad_layers`, of a batch.

    images (B, H, W, 3) normalised; classes (B,) int: the score of sample b is
    target(outputs, classes)[b], by default logits[b, classes[b]] (`class_logit`;
    `Probe.logits` is then whatever the model returns). Samples are independent in
    eval mode, so the gradient of the summed scores gives every sample its own
    gradient. Gradients are taken by adding zero tensors to the outputs of
    `grad_layers` (a method interceptor) and differentiating with respect to them:
    the model is not changed.
    """
    grad_layers = tuple(grad_layers)
    wanted = tuple(dict.fromkeys(tuple(feature_layers) + grad_layers + tuple(tap_layers)))

    def forward(deltas: Dict[str, jnp.ndarray]):
        def add_delta(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            name = "/".join(context.module.path)
            if context.method_name == "__call__" and name in deltas:
                out = out + deltas[name].astype(out.dtype)
            return out
        with nn.intercept_methods(add_delta):
            logits, state = apply_fn(variables, images, train=False, mutable=["intermediates"],
                                     capture_intermediates=capture_filter(wanted))
        inter = state.get("intermediates", {})
        out = {name: captured(inter, name) for name in wanted}
        picked = target(logits, classes)
        logits = jax.tree.map(lambda a: a.astype(jnp.float32), logits)
        return jnp.sum(picked.astype(jnp.float32)), (logits, out)

    if grad_layers:
        shapes = jax.eval_shape(lambda: forward({})[1][1])
        zeros = {n: jnp.zeros(shapes[n].shape, jnp.float32) for n in grad_layers}
        grads, (logits, out) = jax.grad(forward, has_aux=True)(zeros)
    else:
        _, (logits, out) = forward({})
        grads = {}
    feats = {n: out[n].astype(jnp.float32) for n in feature_layers}
    feats.update({n: out[n].astype(jnp.float32) for n in grad_layers})
    taps = {n: out[n] for n in tap_layers}
    return Probe(logits, feats, {n: g.astype(jnp.float32) for n, g in grads.items()}, taps)
