"""Reference rows that show what chance looks like: a random map and a centre Gaussian.

Neither looks at the model. "random" is uniform noise at input resolution,
a pure function of each sample's id (the same map on every run and device
layout); "centre" is an isotropic Gaussian at the image centre (sigma = a
quarter of the side), the prior that faces put their features near the middle.
"""
import jax
import jax.numpy as jnp

from fer_jax.cams import base

_RANDOM_SEED = 20240200   # fixed: reference rows must not change between runs


def random_map(x: base.LayerInputs) -> jnp.ndarray:
    assert x.images is not None and x.sample_ids is not None   # the engine always sets both
    b, h, w = x.images.shape[:3]
    key = jax.random.key(_RANDOM_SEED)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(x.sample_ids.astype(jnp.uint32))
    return jax.vmap(lambda k: jax.random.uniform(k, (h, w)))(keys)


def centre_map(x: base.LayerInputs) -> jnp.ndarray:
    assert x.images is not None   # the engine always sets it
    b, h, w = x.images.shape[:3]
    ys = (jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2.0) / (0.25 * h)
    xs = (jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2.0) / (0.25 * w)
    g = jnp.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))
    return jnp.broadcast_to(g, (b, h, w))


for _name, _fn, _summary in (
        ("random", random_map, "reference: uniform noise (chance level)"),
        ("centre", centre_map, "reference: a Gaussian at the image centre (the 'faces are "
                               "centred' prior)")):
    base.register(base.CamMethod(
        name=_name, summary=_summary, fn=_fn, needs=frozenset(), source=base.INPUT,
        output="map", relu=False, class_specific=False, reference=True))
