"""Score-CAM (Wang et al. 2020): channels weighted by the score of the image they mask.

Each channel of the layer, upsampled to the input and min-max normalised,
masks the image; the target logit of the masked image is that channel's score;
the weights are the softmax of the scores over channels (as pytorch-grad-cam;
the original paper uses the class probability of each masked image, minus
that of a baseline).

Upsampling of the masks: pytorch-grad-cam's masks are corner-aligned bilinear
(torch.nn.UpsamplingBilinear2d, align_corners=True); the authors' code
(haofanwang/Score-CAM) upsamples with half-pixel centres (F.interpolate,
align_corners=False). The registered `scorecam` is corner-aligned, as the
library we test against; `score_cam(x, corner_aligned=False)` gives the
authors' masks. On a 7 x 7 grid the two masks differ little; on a 2 x 2 grid
(a ResNet's stage4 at 64 px) they differ enough to change the map
(docs/method.md, "CAM methods").

Cost: B x C masked forwards, run on the device in chunks of `score_batch`
images (a loop of jitted forwards, no Python loop over channels). A channel
whose map is constant on an image masks it with zeros (its mask is
(up - min) / (max - min + eps) = 0), so all such (image, channel) pairs of an
image share one forward of a zero image: the pairs are sorted, non-constant
first, and the loop runs only the chunks that hold them (a dynamic trip
count over static shapes). The loop is not reverse-differentiable.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.cams import base

MASK_EPS = 1e-8   # mask = (up - min) / (max - min + MASK_EPS), as pytorch-grad-cam


def interpolation_matrix(n_out: int, n_in: int, corner_aligned: bool) -> np.ndarray:
    """(n_out, n_in) float32 weights of 1-D linear interpolation of n_in samples to n_out.

    corner_aligned: output sample i sits at input coordinate i (n_in - 1) / (n_out - 1),
    so the first and last samples of the two grids coincide (torch's align_corners=True,
    nn.UpsamplingBilinear2d). Otherwise half-pixel centres: (i + 0.5) n_in / n_out - 0.5,
    clamped to [0, n_in - 1] (align_corners=False, cv2.INTER_LINEAR; jax.image.resize
    "linear" when upsampling). Each row has at most two non-zero weights, summing to 1.
    """
    i = np.arange(n_out, dtype=np.float64)
    if corner_aligned:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    else:
        src = np.clip((i + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    left = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    right = np.minimum(left + 1, n_in - 1)
    frac = src - left
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), left), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), right), frac)
    return weights.astype(np.float32)


def upsample_bilinear(maps: jnp.ndarray, size: tuple, corner_aligned: bool) -> jnp.ndarray:
    """Bilinear resize of (N, h, w) maps to (N, *size) float32, one matrix per axis.

    corner_aligned as in `interpolation_matrix`. Full float32 precision on every
    backend (a TPU's or GPU's default matmul precision would round the masks).
    """
    rows = jnp.asarray(interpolation_matrix(size[0], maps.shape[1], corner_aligned))
    cols = jnp.asarray(interpolation_matrix(size[1], maps.shape[2], corner_aligned))
    return jnp.einsum("Hh,nhw,Ww->nHW", rows, maps.astype(jnp.float32), cols,
                      precision=jax.lax.Precision.HIGHEST)


def score_cam(x: base.LayerInputs, corner_aligned: bool = True) -> jnp.ndarray:
    """(B, h, w, C) features -> (B, h, w, C) contributions, softmax(score) per channel.

    Scores: target logits of the B x C images `images * mask`, each mask the channel
    upsampled to (H, W) (corner_aligned: see the module docstring) and min-max
    normalised to [0, 1]. Forwards of at most `score_batch` images each.
    """
    feats, images, classes = x.features, x.images, x.classes
    class_scores = x.class_scores
    # features and class_scores (FORWARDS) are declared in `needs`, images and classes are
    # always set: the engine fills all four.
    assert feats is not None and images is not None and classes is not None
    assert class_scores is not None
    b, h, w, c = feats.shape
    size = images.shape[1:3]
    n = b * c                                   # (image, channel) pairs, p = image * C + channel
    # Entries 0..n-1 are the pairs; entry n + j is a zero image scored for image j's class.
    entries = n + b
    chunk = max(1, min(entries, x.score_batch))
    max_trips = -(-entries // chunk)
    maps = jnp.moveaxis(feats, -1, 1).reshape(n, h, w).astype(jnp.float32)
    # Min-max is shift-invariant: shifting each map to min 0 first makes a constant map
    # upsample to exact zeros (interpolation weights need not sum to 1 exactly in float).
    maps = maps - jnp.min(maps, axis=(1, 2), keepdims=True)
    live = jnp.max(maps, axis=(1, 2)) > 0       # (n,) non-constant maps (NaN counts as constant)
    n_live = jnp.sum(live)
    kind = jnp.concatenate([jnp.where(live, 0, 2), jnp.ones((b,), jnp.int32)])
    order = jnp.argsort(kind, stable=True)      # live pairs, then the zero images, then the rest
    needed = n_live + jnp.where(n_live < n, b, 0)
    order = jnp.pad(order, (0, max_trips * chunk - entries))   # padding: scored, never read

    def chunk_scores(i: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
        idx = jax.lax.dynamic_slice(order, (i * chunk,), (chunk,))
        pair = idx < n
        image = jnp.where(pair, idx // c, idx - n)
        up = upsample_bilinear(maps[jnp.minimum(idx, n - 1)], size, corner_aligned)
        lo = jnp.min(up, axis=(1, 2), keepdims=True)
        hi = jnp.max(up, axis=(1, 2), keepdims=True)
        masks = jnp.where(pair[:, None, None], (up - lo) / (hi - lo + MASK_EPS), 0.0)
        got = class_scores(images[image] * masks[..., None], classes[image])
        return jax.lax.dynamic_update_slice(scores, got.astype(jnp.float32), (i * chunk,))

    trips = (needed + chunk - 1) // chunk
    sorted_scores = jax.lax.fori_loop(0, trips, chunk_scores,
                                      jnp.zeros((max_trips * chunk,), jnp.float32))
    rank = jnp.zeros((entries,), jnp.int32).at[order[:entries]].set(
        jnp.arange(entries, dtype=jnp.int32))
    pairs = jnp.arange(n)
    source = jnp.where(live, pairs, n + pairs // c)   # a constant map: its image's zero entry
    scores = sorted_scores[rank[source]].reshape(b, c)
    weights = jax.nn.softmax(scores, axis=-1)
    return feats * weights[:, None, None, :]


base.register(base.CamMethod(
    name="scorecam", summary="Wang et al. 2020: channels weighted by the score of the image "
                             "each one masks (one forward per channel, batched)",
    fn=functools.partial(score_cam, corner_aligned=True),
    needs=frozenset({base.FEATURES, base.FORWARDS})))
