"""ADL (Choe & Shim 2019): attention-based dropout between ResNet blocks, training only.
The model keeps its linear GAP head: the built-in map is CAM."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax.fields import Field, boolean, number
from fer_jax.methods import base


class ADL(nn.Module):
    """Attention-based dropout (training only; identity in evaluation). (B, h, w, C) -> same.

    attention = channel mean; with probability `drop_rate` (one draw per call, rng
    "dropout") the features are multiplied by the drop mask [attention < threshold *
    max_hw attention], else by the importance map sigmoid(attention).
    """
    drop_rate: float = 0.4
    threshold: float = 0.1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if not train:
            return x
        attention = jnp.mean(x.astype(jnp.float32), axis=-1, keepdims=True)
        peak = jnp.max(attention, axis=(1, 2), keepdims=True)
        drop_mask = (attention < self.threshold * peak).astype(jnp.float32)
        use_drop = jax.random.uniform(self.make_rng("dropout")) < self.drop_rate
        selected = jnp.where(use_drop, drop_mask, jax.nn.sigmoid(attention))
        return x * selected.astype(x.dtype)


base.register(base.Method(
    name="adl", summary="Choe & Shim 2019: attention-based dropout after ResNet blocks",
    switch=("model.adl", True), families=frozenset({"resnet"}),
    options=(
        base.Option("model.adl", Field(
            False, "ResNet: ADL layers (training only) after the first block of stage3, the "
            "first and the last block of stage4.", boolean)),
        base.Option("model.adl_drop_rate", Field(
            0.4, "ADL: probability of the drop mask (else importance map).", number(0, 1))),
        base.Option("model.adl_threshold", Field(
            0.1, "ADL: drop where the channel mean is >= this x its max.", number(0, 1))),
    ),
    # Where the reference code puts them (it follows ADL's ResNet-50): after the first
    # block of stage3, after the first block of stage4 and after its last one. The stage4
    # output, which CAMs and the alignment read, is thus an ADL output (identity in evaluation).
    insert=base.Insert(
        layer=lambda options, name: ADL(options.adl_drop_rate, options.adl_threshold, name=name),
        after={3: (0,), 4: (0, -1)}),
    paper_configs=base.paper_configs("adl", "rafdb", "affectnet")))
