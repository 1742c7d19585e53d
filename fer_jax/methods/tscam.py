"""TS-CAM (Gao et al. 2021): a 3x3 conv over a ViT's patch grid gives semantic class maps,
averaged into the logits. ViT head; its built-in map "tscam" (fer_jax.cams.builtin)
multiplies them with the class token's attention."""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.methods import base


class TsCamHead(nn.Module):
    """TS-CAM's head: 3x3 conv (padding 1) from the patch grid to K semantic maps, GAP.

    (B, h, w, D) normed patch tokens -> logits (B, K) float32.
    """
    num_classes: int
    dtype: Any = jnp.float32

    def setup(self):
        self.conv = nn.Conv(self.num_classes, (3, 3), padding=1, dtype=self.dtype)

    def __call__(self, x: jnp.ndarray, train: bool = False,
                 labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        return jnp.mean(self.conv(x).astype(jnp.float32), axis=(1, 2))

    def class_maps(self, x: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        """The semantic map of `classes` (B,): (B, h, w) float32 (before the attention product)."""
        return base.pick(self.conv(x).astype(jnp.float32), classes)


base.register(base.Method(
    name="tscam", summary="Gao et al. 2021: semantic maps of the patch grid x class-token "
    "attention",
    switch=("model.vit_head", "tscam"), families=frozenset({"vit"}),
    head=lambda num_classes, options, hidden, dtype, name: TsCamHead(num_classes, dtype,
                                                                     name=name),
    cam_method="tscam", paper_configs=base.paper_configs("tscam", "rafdb")))
