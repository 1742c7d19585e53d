"""CutMix (Yun et al. 2019) of a training batch, AU maps included (docs/method.md, "Training-time methods").

One box per step: with probability `prob`, a ratio lam0 ~ Beta(beta, beta) and a
box of sides int(S * sqrt(1 - lam0)) (halved on each side of a uniform centre, then
clipped to the image, as CutMix's code) are drawn; inside the box every image takes
the pixels of a partner from a random permutation of the batch, and its AU map
takes the partner's map with the same box, so the alignment loss sees the map of
the image the model sees. The labels are mixed in the loss:
lam * CE(label) + (1 - lam) * CE(partner's label), lam = 1 - box area / image area.

The box and the coin are functions of (seed, step): the same on every device, as
one box per global batch in the reference code. The partners are drawn per device
among its own samples (key of (seed, step, device)).
"""
from typing import Dict, NamedTuple, Tuple, Union

import jax
import jax.numpy as jnp

_STREAM = 0x43554D   # separates CutMix's keys from the dropout keys of the same step


class Box(NamedTuple):
    """Rows y0:y1 and columns x0:x1 (int32 scalars); empty (y0 == y1) when not applied."""
    y0: jnp.ndarray
    y1: jnp.ndarray
    x0: jnp.ndarray
    x1: jnp.ndarray


def keys(seed: int, step: Union[int, jax.Array], device: Union[int, jax.Array]
         ) -> Tuple[jax.Array, jax.Array]:
    """(box key shared by every device, partner key of this device) for a step."""
    shared = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _STREAM), step)
    return shared, jax.random.fold_in(shared, device)


def draw_box(key: jax.Array, size: Tuple[int, int], prob: float, beta: float) -> Box:
    """CutMix's random box for an image of `size` (h, w); empty with probability 1 - prob."""
    h, w = size
    k_apply, k_lam, k_y, k_x = jax.random.split(key, 4)
    # Beta(1, 1), the paper's setting, is the uniform law: drawn directly, which spares
    # compiling the gamma sampler (seconds on a CPU).
    lam0 = (jax.random.uniform(k_lam) if beta == 1.0 else jax.random.beta(k_lam, beta, beta))
    cut = jnp.sqrt(1.0 - lam0)
    half_h = jnp.floor(h * cut).astype(jnp.int32) // 2
    half_w = jnp.floor(w * cut).astype(jnp.int32) // 2
    cy = jax.random.randint(k_y, (), 0, h)
    cx = jax.random.randint(k_x, (), 0, w)
    y0, y1 = jnp.clip(cy - half_h, 0, h), jnp.clip(cy + half_h, 0, h)
    x0, x1 = jnp.clip(cx - half_w, 0, w), jnp.clip(cx + half_w, 0, w)
    applied = jax.random.uniform(k_apply) < prob
    return Box(y0, jnp.where(applied, y1, y0), x0, x1)


def paste(batch: Dict[str, jnp.ndarray], box: Box, partners: jnp.ndarray
          ) -> Tuple[Dict[str, jnp.ndarray], jnp.ndarray, jnp.ndarray]:
    """Pastes each partner's box into each sample: images, AU maps and their valid flags.

    batch: image (b, H, W, 3), heatmap (b, H, W), valid (b,), label (b,), ...;
    partners (b,) int: sample i takes the box of sample partners[i].
    Returns (mixed batch, partners' labels (b,), lam ()), lam = the fraction of
    each image that is its own. A mixed AU map is valid when every pixel of it
    comes from a valid map: the sample's own flag counts if any of its own pixels
    remain, the partner's if the box is not empty.
    """
    h, w = batch["image"].shape[1:3]
    ys = jnp.arange(h)[:, None]
    xs = jnp.arange(w)[None, :]
    inside = (ys >= box.y0) & (ys < box.y1) & (xs >= box.x0) & (xs < box.x1)   # (H, W)
    area = (box.y1 - box.y0) * (box.x1 - box.x0)
    lam = 1.0 - area.astype(jnp.float32) / float(h * w)
    valid, partner_valid = batch["valid"], batch["valid"][partners]
    out = dict(batch)
    out["image"] = jnp.where(inside[None, :, :, None], batch["image"][partners], batch["image"])
    out["heatmap"] = jnp.where(inside[None], batch["heatmap"][partners], batch["heatmap"])
    out["valid"] = (jnp.where(lam > 0, valid, 1.0) * jnp.where(area > 0, partner_valid, 1.0)
                    ).astype(valid.dtype)
    return out, batch["label"][partners], lam


def mix(batch: Dict[str, jnp.ndarray], box_key: jax.Array, partner_key: jax.Array,
        prob: float, beta: float) -> Tuple[Dict[str, jnp.ndarray], jnp.ndarray, jnp.ndarray]:
    """CutMix of this device's batch: `draw_box`, a random permutation, `paste`."""
    box = draw_box(box_key, (batch["image"].shape[1], batch["image"].shape[2]), prob, beta)
    partners = jax.random.permutation(partner_key, batch["image"].shape[0])
    return paste(batch, box, partners)


def mix_at(batch: Dict[str, jnp.ndarray], seed: int, step: Union[int, jax.Array],
           device: Union[int, jax.Array], *, prob: float, beta: float
           ) -> Tuple[Dict[str, jnp.ndarray], jnp.ndarray, jnp.ndarray]:
    """`mix` with the keys of (seed, step, device): the train step's batch transform
    (fer_jax.methods.cutmix), so a resumed run mixes as the uninterrupted one."""
    return mix(batch, *keys(seed, step, device), prob, beta)
