"""Class activation maps over any named (B, h, w, C) layer: CAM and its gradient kin.

- "cam" (Zhou et al. 2016): for a global-average-pooling head, logits =
  mean_hw(F) @ W + b, so the map of class k is F @ W[:, k]; its spatial mean
  plus b_k is exactly logit k.
- "gradcam", "gradcam++", "layercam": built from F and G = d logit_k / d F,
  the gradient of the class logit at that layer, then ReLU (method.md).
Gradients at a layer are taken without changing the model: a method
interceptor adds a zero tensor to the layer's output and differentiates by it.
"""
from typing import Any, Callable, Dict, Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax import alignment

_EPS = 1e-7


def class_activation_map(features: jnp.ndarray, head_kernel: jnp.ndarray,
                         classes: jnp.ndarray) -> jnp.ndarray:
    """CAM of one class per sample: (B, h, w, C), (C, K), (B,) int -> (B, h, w)."""
    weights = jnp.take(head_kernel.astype(jnp.float32), classes, axis=1).T  # (B, C)
    return jnp.einsum("bhwc,bc->bhw", features.astype(jnp.float32), weights)


def min_max(maps: jnp.ndarray) -> jnp.ndarray:
    """Per-sample min-max normalisation of (B, h, w) maps to [0, 1] (flat maps -> 0)."""
    lo = jnp.min(maps, axis=(1, 2), keepdims=True)
    hi = jnp.max(maps, axis=(1, 2), keepdims=True)
    return (maps - lo) / jnp.maximum(hi - lo, 1e-12)


def upsample_cam(cams: jnp.ndarray, size: Tuple[int, int]) -> jnp.ndarray:
    """CAM for scoring and display: min-max, bilinear to `size`, clamped to [0, 1]."""
    maps = min_max(cams)
    up = alignment.resize_clamped(maps, size, antialias=False)
    return jnp.clip(up, 0.0, 1.0)


def cam_cos(cams: jnp.ndarray, heatmaps: jnp.ndarray) -> jnp.ndarray:
    """Per-sample CAM-COS (method.md): (B, h, w) CAMs, (B, H, W) AU maps -> (B,)."""
    return alignment.cosine(upsample_cam(cams, heatmaps.shape[1:]), heatmaps)


def features_and_gradients(apply_fn: Callable, variables: Mapping[str, Any],
                           images: jnp.ndarray, layer: str, classes: jnp.ndarray
                           ) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Eval-mode forward and backward to `layer`.

    images (B, H, W, 3), classes (B,) int. Returns the layer's features F
    (B, h, w, C), G = d logits[b, classes[b]] / d F (B, h, w, C), and the
    logits (B, K). Samples are independent in eval mode, so one backward pass
    of the summed class logits gives every sample's own gradient.
    """
    def forward(delta):
        def add_delta(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and "/".join(context.module.path) == layer:
                out = out + delta.astype(out.dtype)
            return out
        with nn.intercept_methods(add_delta):
            logits, state = apply_fn(variables, images, train=False, mutable=["intermediates"],
                                     capture_intermediates=alignment.capture_filter((layer,)))
        picked = jnp.take_along_axis(logits, classes[:, None], axis=1)
        return jnp.sum(picked), (logits, alignment.captured(state["intermediates"], layer))

    shape = jax.eval_shape(lambda: forward(jnp.zeros(()))[1][1]).shape
    grads, (logits, feats) = jax.grad(forward, has_aux=True)(jnp.zeros(shape, jnp.float32))
    return feats.astype(jnp.float32), grads, logits


def grad_cam(features: jnp.ndarray, grads: jnp.ndarray) -> jnp.ndarray:
    """Grad-CAM: ReLU(sum_c mean_hw(G_c) F_c). (B, h, w, C) x2 -> (B, h, w)."""
    weights = jnp.mean(grads, axis=(1, 2))
    return nn.relu(jnp.einsum("bhwc,bc->bhw", features, weights))


def grad_cam_plus_plus(features: jnp.ndarray, grads: jnp.ndarray) -> jnp.ndarray:
    """Grad-CAM++ (Chattopadhay et al. 2018), closed-form weights of its exp-score form."""
    g2, g3 = grads ** 2, grads ** 3
    total = jnp.sum(features, axis=(1, 2), keepdims=True)
    alpha = g2 / (2.0 * g2 + total * g3 + _EPS)
    alpha = jnp.where(grads != 0.0, alpha, 0.0)
    weights = jnp.sum(alpha * nn.relu(grads), axis=(1, 2))
    return nn.relu(jnp.einsum("bhwc,bc->bhw", features, weights))


def layer_cam(features: jnp.ndarray, grads: jnp.ndarray) -> jnp.ndarray:
    """LayerCAM (Jiang et al. 2021): ReLU(sum_c ReLU(G) * F), weights per position."""
    return nn.relu(jnp.sum(nn.relu(grads) * features, axis=-1))


GRADIENT_CAMS: Dict[str, Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]] = {
    "gradcam": grad_cam,
    "gradcam++": grad_cam_plus_plus,
    "layercam": layer_cam,
}
