"""CAM (Zhou et al. 2016): the classifier's weights applied to the pooled layer.

For a global-average-pooling head, logits = mean_hw(F) @ W + b, so the map of
class k is sum_c F[..., c] W[c, k]: its spatial mean plus b_k is exactly logit k.
No ReLU: the paper's CAM-COS min-max normalises the raw map (docs/method.md, "CAM methods").
"""
import jax.numpy as jnp

from fer_jax.cams import base


def class_activation_weights(inputs: base.LayerInputs) -> jnp.ndarray:
    """(B, h, w, C) features, (C, K) kernel, (B,) classes -> (B, h, w, C) contributions."""
    # Declared in `needs` (features, head) or always set (classes): the engine fills them.
    assert inputs.features is not None and inputs.head_kernel is not None
    assert inputs.classes is not None
    weights = jnp.take(inputs.head_kernel.astype(jnp.float32), inputs.classes, axis=1).T
    return inputs.features * weights[:, None, None, :]


base.register(base.CamMethod(
    name="cam", summary="Zhou et al. 2016: head weights of the class times the pooled layer",
    fn=class_activation_weights, needs=frozenset({base.FEATURES, base.HEAD}),
    source=base.CAM_LAYER, relu=False, requires=base.needs_gap_head, in_paper=True))
