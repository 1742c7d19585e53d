"""Plausibility of a map: how well it lies on the AUs (per sample, jittable).

- CAM-COS: cosine between the map (in [0, 1], input resolution) and the AU map.
- AU pointing game: 1 when the map's maximum lies where the AU map > 0.5.
Both are meaningful only for samples with a valid AU map; the paper's
aggregation (fer_jax.metrics.aggregate) skips the others.
"""
import jax.numpy as jnp

from fer_jax import maps

POINTING_THRESHOLD = 0.5


def cam_cos(cam_maps: jnp.ndarray, heatmaps: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W) maps in [0, 1] at the heatmaps' resolution, (B, H, W) AU maps -> (B,)."""
    return maps.cosine(cam_maps, heatmaps)


def pointing_hits(cam_maps: jnp.ndarray, heatmaps: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W) maps and AU maps -> (B,) float 1/0: is the map's argmax on the AUs?

    Ties go to the first maximum in row-major order.
    """
    b = cam_maps.shape[0]
    peak = jnp.argmax(cam_maps.reshape(b, -1), axis=1)
    at_peak = jnp.take_along_axis(heatmaps.reshape(b, -1), peak[:, None], axis=1)[:, 0]
    return (at_peak > POINTING_THRESHOLD).astype(jnp.float32)
