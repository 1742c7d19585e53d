"""The AU alignment loss and ATT-COS (docs/method.md, "Alignment loss" and "ATT-COS (per layer; higher is better)").

Both read the channel-mean attention of (B, h, w, C) layers captured by name
(fer_jax.capture), so any model works without change.
"""
from typing import Optional, Sequence, cast

import jax
import jax.numpy as jnp

from fer_jax import maps


def alignment_loss(features: Sequence[jnp.ndarray], heatmaps: jnp.ndarray,
                   valid: jnp.ndarray, axis_name: Optional[str] = None) -> jnp.ndarray:
    """This device's share of R, the mean over layers of the masked (1 - cos) average.

    features: per layer (B, h, w, C); heatmaps: (B, H, W) in [0, 1];
    valid: (B,) bool/float, 1 where the heatmap counts. With `axis_name`, the
    count of valid samples is summed over the global batch, so the shares of
    all devices add up (psum) to R of the global batch. All-invalid gives 0.
    """
    valid = valid.astype(jnp.float32)
    count = jnp.sum(valid)
    if axis_name is not None:
        count = jax.lax.psum(count, axis_name)
    terms = []
    for feats in features:
        att = maps.channel_mean(feats)
        target = maps.resize_clamped(heatmaps, (att.shape[1], att.shape[2]), antialias=True)
        terms.append(jnp.sum(valid * (1.0 - maps.cosine(att, target))) / jnp.maximum(count, 1.0))
    # cast: typeshed's sum() says "| Literal[0]" (the start value; there is at least one layer).
    return cast(jnp.ndarray, sum(terms)) / len(terms)


def att_cos(features: jnp.ndarray, heatmaps: jnp.ndarray) -> jnp.ndarray:
    """Per-sample ATT-COS of one layer: (B, h, w, C), (B, H, W) in [0, 1] -> (B,) in [0, 1]."""
    att = maps.upsample_attention(maps.channel_mean(features),
                                  (heatmaps.shape[1], heatmaps.shape[2]))
    return maps.cosine(att, heatmaps)
