"""Maps read from a vision transformer's attention probabilities (class-agnostic).

- "rollout" (Abnar & Zuidema 2020): per block, the head-mean attention plus
  the identity (the residual path), rows renormalised; the product over blocks
  from the first to the last; the class token's row over the patches.
- "cls_attention": the last block's attention of the class token to the
  patches, averaged over heads.
Both are (B, h, w) on the patch grid. With a GAP head the class token does
not feed the classifier, so these maps say where the class token looked, not
what the logits used; they are reported for comparison with the literature.
"""
import jax.numpy as jnp

from fer_jax.cams import base


def _patch_row(row: jnp.ndarray, grid: tuple) -> jnp.ndarray:
    """(B, N) class-token row -> (B, h, w) over the patch tokens."""
    return row[:, 1:].reshape((row.shape[0],) + tuple(grid))


def rollout(x: base.LayerInputs) -> jnp.ndarray:
    # attention is declared in `needs`; grid is set for every ViT (needs_attention).
    assert x.attention is not None and x.grid is not None
    joint = None
    for probs in x.attention:
        a = jnp.mean(probs.astype(jnp.float32), axis=1)            # (B, N, N)
        a = 0.5 * a + 0.5 * jnp.eye(a.shape[-1], dtype=a.dtype)
        a = a / jnp.sum(a, axis=-1, keepdims=True)
        joint = a if joint is None else jnp.einsum("bij,bjk->bik", a, joint)
    assert joint is not None   # a ViT has at least one attention block
    return _patch_row(joint[:, 0], x.grid)


def cls_attention(x: base.LayerInputs) -> jnp.ndarray:
    # attention is declared in `needs`; grid is set for every ViT (needs_attention).
    assert x.attention is not None and x.grid is not None
    last = jnp.mean(x.attention[-1].astype(jnp.float32), axis=1)    # (B, N, N)
    return _patch_row(last[:, 0], x.grid)


for _name, _fn, _summary in (
        ("rollout", rollout, "Abnar & Zuidema 2020: attention rolled out through every block "
                             "(ViT, class-agnostic)"),
        ("cls_attention", cls_attention, "the last block's class-token attention to the patches "
                                         "(ViT, class-agnostic)")):
    base.register(base.CamMethod(
        name=_name, summary=_summary, fn=_fn, needs=frozenset({base.ATTENTION}),
        source=base.ALL_BLOCKS, output="map", relu=False, class_specific=False,
        requires=base.needs_attention))
