"""Score-CAM (Wang et al. 2020): channels weighted by the score of the image they mask.

Each channel of the layer, upsampled to the input and min-max normalised,
masks the image; the target logit of the masked image is that channel's score;
the weights are the softmax of the scores over channels (as pytorch-grad-cam;
the original paper uses the class probability of each masked image, minus
that of a baseline). The B x C masked forwards run on the device in chunks of
`score_batch` images (a `lax.map`, no Python loop over channels).
"""
import jax
import jax.numpy as jnp

from fer_jax.cams import base


def score_cam(x: base.LayerInputs) -> jnp.ndarray:
    """(B, h, w, C) features -> (B, h, w, C) contributions, softmax(score) per channel."""
    feats, images, classes = x.features, x.images, x.classes
    b, h, w, c = feats.shape
    size = images.shape[1:3]
    per_chunk = max(1, min(c, x.score_batch // b))   # channels per forward
    chunks = -(-c // per_chunk)
    padded = jnp.pad(jnp.moveaxis(feats, -1, 0), ((0, chunks * per_chunk - c), (0, 0), (0, 0),
                                                 (0, 0)))
    padded = padded.reshape(chunks, per_chunk, b, h, w)
    tiled_classes = jnp.tile(classes, per_chunk)

    def chunk_scores(channels: jnp.ndarray) -> jnp.ndarray:   # (k, B, h, w) -> (k, B)
        up = jax.image.resize(channels, (per_chunk, b) + tuple(size), method="linear")
        lo = jnp.min(up, axis=(2, 3), keepdims=True)
        hi = jnp.max(up, axis=(2, 3), keepdims=True)
        masks = (up - lo) / (hi - lo + 1e-8)
        masked = images[None] * masks[..., None]          # (k, B, H, W, 3)
        scores = x.class_scores(masked.reshape((per_chunk * b,) + masked.shape[2:]),
                                tiled_classes)
        return scores.reshape(per_chunk, b)

    scores = jax.lax.map(chunk_scores, padded).reshape(chunks * per_chunk, b)[:c].T  # (B, C)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
    return feats * weights[:, None, None, :]


base.register(base.CamMethod(
    name="scorecam", summary="Wang et al. 2020: channels weighted by the score of the image "
                             "each one masks (one forward per channel, batched)",
    fn=score_cam, needs=frozenset({base.FEATURES, base.FORWARDS})))
