"""PRM (Zhou et al. 2018): a 1x1-conv class map, peak stimulation by 3x3 stride-1 max
pooling, then the global average. ResNet head; built-in map "prm"."""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.errors import ConfigError
from fer_jax.methods import base


class PrmHead(nn.Module):
    """PRM: 1x1 conv to K class response maps, 3x3 stride-1 max pooling (no padding), GAP.

    (B, h, w, C) with h, w >= 3 -> logits (B, K) float32.
    """
    num_classes: int
    window: int = 3
    dtype: Any = jnp.float32

    def setup(self):
        self.conv = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)

    def __call__(self, x: jnp.ndarray, train: bool = False,
                 labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        if min(x.shape[1:3]) < self.window:
            raise ConfigError(
                f"config.model.head='prm': its {self.window}x{self.window} peak stimulation needs "
                f"a cam layer of at least that size, got {x.shape[1]}x{x.shape[2]}; raise "
                "config.dataset.image_size or set config.model.large_maps=True")
        response = self.conv(x).astype(jnp.float32)
        peaks = nn.max_pool(response, (self.window, self.window), strides=(1, 1),
                            padding="VALID")
        return jnp.mean(peaks, axis=(1, 2))

    def class_maps(self, x: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        """The class response map of `classes` (B,): (B, h, w) float32."""
        return base.pick(self.conv(x).astype(jnp.float32), classes)


base.register(base.Method(
    name="prm", summary="Zhou et al. 2018: peak-stimulated class response maps",
    switch=("model.head", "prm"), families=frozenset({"resnet"}),
    head=lambda num_classes, options, hidden, dtype, name: PrmHead(
        num_classes, dtype=dtype, name=name),
    cam_method="prm", paper_configs=base.paper_configs("prm", "rafdb", "affectnet")))
