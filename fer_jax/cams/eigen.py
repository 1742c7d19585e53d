"""Eigen-CAM (Muhammad & Yeasin 2020) and the first principal component behind `eigen_smooth`."""
import jax
import jax.numpy as jnp

from fer_jax.cams import base

# Power iterations on the smaller Gram matrix. The error of the direction
# shrinks like (lambda2 / lambda1)^k; 100 steps leave 3e-5 of it at a ratio of
# 0.9, far below what changes a map. LAPACK's SVD is not used: on XLA:CPU a
# LAPACK call inside a multi-device (pmap / shard_map) program deadlocked here.
_POWER_ITERATIONS = 100


def _top_eigenvector(gram: jnp.ndarray) -> jnp.ndarray:
    """(B, n, n) symmetric PSD -> (B, n) unit eigenvector of the largest eigenvalue."""
    start = jax.random.normal(jax.random.key(0), gram.shape[:2], jnp.float32)

    def step(_, v):
        v = jnp.einsum("bij,bj->bi", gram, v)
        return v / jnp.maximum(jnp.linalg.norm(v, axis=1, keepdims=True), 1e-30)

    return jax.lax.fori_loop(0, _POWER_ITERATIONS, step,
                             start / jnp.linalg.norm(start, axis=1, keepdims=True))


def first_component(weighted: jnp.ndarray) -> jnp.ndarray:
    """Projection of each position on the first principal component: (B, h, w, C) -> (B, h, w).

    Positions are centred over h*w first (as pytorch-grad-cam, whose SVD gives
    the same component). A component's sign is arbitrary; it is fixed so that
    the largest magnitude is positive (the sign correction of Seg-Eigen-CAM,
    Chung & Ying 2025), so the map does not flip between runs, devices or
    libraries.
    """
    b, h, w, c = weighted.shape
    x = jnp.nan_to_num(weighted.astype(jnp.float32)).reshape(b, h * w, c)
    x = x - jnp.mean(x, axis=1, keepdims=True)
    if h * w <= c:   # left singular vector u: x v1 = sigma1 u, and v1 = x^T u / |x^T u|
        u = _top_eigenvector(jnp.einsum("bnc,bmc->bnm", x, x))
        v1 = jnp.einsum("bnc,bn->bc", x, u)
        v1 = v1 / jnp.maximum(jnp.linalg.norm(v1, axis=1, keepdims=True), 1e-30)
    else:
        v1 = _top_eigenvector(jnp.einsum("bnc,bnd->bcd", x, x))
    proj = jnp.einsum("bnc,bc->bn", x, v1)
    flip = jnp.abs(jnp.min(proj, axis=1)) > jnp.abs(jnp.max(proj, axis=1))
    proj = jnp.where(flip[:, None], -proj, proj)
    return proj.reshape(b, h, w)


def eigen_cam(x: base.LayerInputs) -> jnp.ndarray:
    """The layer's first principal component (class-agnostic; no gradients)."""
    assert x.features is not None   # declared in `needs`: the engine fills it
    return first_component(x.features)


base.register(base.CamMethod(
    name="eigencam", summary="Muhammad & Yeasin 2020: first principal component of the layer "
                             "(class-agnostic)",
    fn=eigen_cam, needs=frozenset({base.FEATURES}), output="map", class_specific=False))
