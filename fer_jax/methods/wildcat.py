"""WILDCAT (Durand et al. 2017): per class, `modalities` 1x1-conv maps averaged into a class
map; the logit pools the map's highest and lowest positions. ResNet head; built-in map
"wildcat" (fer_jax.cams.builtin)."""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.fields import Field, number
from fer_jax.methods import base


def _count(fraction: float, n: int) -> int:
    """`fraction` of n positions, rounded as Python rounds (the reference code's rule)."""
    return min(n, int(round(fraction * n)))


def wildcat_pool(class_maps: jnp.ndarray, kmax: float, kmin: float, alpha: float) -> jnp.ndarray:
    """WILDCAT's spatial pooling: (B, h, w, K) -> (B, K) float32.

    s = (mean of the top kmax*n values + alpha * mean of the bottom kmin*n) / 2 over
    the n = h*w positions of each class map; with kmin = 0 or alpha = 0 the score
    is the top mean alone (the original code's branch, no halving).
    """
    b, h, w, k = class_maps.shape
    n = h * w
    n_max, n_min = max(1, _count(kmax, n)), _count(kmin, n)
    ordered = jnp.sort(class_maps.astype(jnp.float32).reshape(b, n, k), axis=1)  # ascending
    score = jnp.mean(ordered[:, n - n_max:], axis=1)
    if n_min > 0 and alpha != 0.0:
        score = (score + alpha * jnp.mean(ordered[:, :n_min], axis=1)) / 2.0
    return score


class WildcatHead(nn.Module):
    """WILDCAT: 1x1 conv to K * modalities maps, class maps = mean over modalities, WILDCAT pool.

    (B, h, w, C) -> logits (B, K) float32; class maps (B, h, w, K).
    """
    num_classes: int
    options: base.Options = base.Options()
    dtype: Any = jnp.float32

    def setup(self):
        self.conv = nn.Conv(self.num_classes * self.options.modalities, (1, 1), dtype=self.dtype)

    def all_maps(self, x: jnp.ndarray) -> jnp.ndarray:
        b, h, w, _ = x.shape
        # Channels are class-major (class c owns channels c*M .. c*M + M-1), as WILDCAT's code.
        out = self.conv(x).astype(jnp.float32).reshape(b, h, w, self.num_classes, -1)
        return jnp.mean(out, axis=-1)

    def __call__(self, x: jnp.ndarray, train: bool = False,
                 labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        o = self.options
        return wildcat_pool(self.all_maps(x), o.kmax, o.kmin, o.alpha)

    def class_maps(self, x: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        """The class map of `classes` (B,): (B, h, w) float32."""
        return base.pick(self.all_maps(x), classes)


base.register(base.Method(
    name="wildcat", summary="Durand et al. 2017: class maps pooled over their top and bottom",
    switch=("model.head", "wildcat"), families=frozenset({"resnet"}),
    options=(
        base.Option("model.wildcat_modalities", Field(
            5, "WILDCAT: class maps per class, averaged.", number(1, 64, integer=True)),
            "modalities"),
        base.Option("model.wildcat_kmax", Field(
            0.5, "WILDCAT: fraction of positions pooled from the top.",
            number(0, 1, lo_open=True)), "kmax"),
        base.Option("model.wildcat_kmin", Field(
            0.1, "WILDCAT: fraction of positions pooled from the bottom (0 = none).",
            number(0, 1)), "kmin"),
        base.Option("model.wildcat_alpha", Field(
            0.6, "WILDCAT: weight of the bottom positions' mean.", number(0)), "alpha"),
    ),
    head=lambda num_classes, options, hidden, dtype, name: WildcatHead(
        num_classes, options, dtype, name=name),
    cam_method="wildcat", paper_configs=base.paper_configs("wildcat", "rafdb", "affectnet")))
