"""Score-CAM's mask upsampling and its batched forwards, against plain NumPy recomputations.

(tests/test_cam_parity.py compares Score-CAM with pytorch-grad-cam, including on a
2 x 2 grid, where the corner-aligned and half-pixel masks differ most.)
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import capture
from fer_jax.cams import base, score

SHAPES = [((2, 2), (64, 64)), ((7, 7), (112, 112)), ((1, 3), (5, 9)), ((5, 3), (17, 4)),
          ((3, 4), (3, 4)), ((4, 4), (1, 1))]


def bilinear_numpy(maps: np.ndarray, size, corner_aligned: bool) -> np.ndarray:
    """Pixel by pixel in float64: the source point of each output pixel, its four
    neighbours (clamped at the border) and their bilinear weights."""
    n, h, w = maps.shape

    def source(i: int, n_out: int, n_in: int) -> float:
        if corner_aligned:
            return 0.0 if n_out == 1 else i * (n_in - 1) / (n_out - 1)
        return min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)

    out = np.zeros((n,) + tuple(size))
    for i in range(size[0]):
        y = source(i, size[0], h)
        y0 = int(np.floor(y))
        y1, dy = min(y0 + 1, h - 1), y - y0
        for j in range(size[1]):
            x = source(j, size[1], w)
            x0 = int(np.floor(x))
            x1, dx = min(x0 + 1, w - 1), x - x0
            out[:, i, j] = ((1 - dy) * (1 - dx) * maps[:, y0, x0] + (1 - dy) * dx * maps[:, y0, x1]
                            + dy * (1 - dx) * maps[:, y1, x0] + dy * dx * maps[:, y1, x1])
    return out


@pytest.mark.parametrize("corner_aligned", [True, False])
@pytest.mark.parametrize("shape,size", SHAPES)
def test_bilinear_upsampling_matches_numpy(shape, size, corner_aligned):
    maps = np.random.default_rng(0).standard_normal((3,) + shape).astype(np.float32)
    got = np.asarray(score.upsample_bilinear(jnp.asarray(maps), size, corner_aligned))
    want = bilinear_numpy(maps.astype(np.float64), size, corner_aligned)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_corner_aligned_and_half_pixel_masks_differ_on_a_2x2_grid():
    """The two definitions are different functions (else the option would be moot):
    corner-aligned reproduces the four values at the image corners, half-pixel
    centres hold them over the corner quarter-cells."""
    maps = jnp.asarray([[[0.0, 1.0], [2.0, 3.0]]])
    corner = np.asarray(score.upsample_bilinear(maps, (8, 8), True))[0]
    half = np.asarray(score.upsample_bilinear(maps, (8, 8), False))[0]
    assert corner[0, 0] == 0 and corner[0, -1] == 1 and corner[-1, 0] == 2 and corner[-1, -1] == 3
    np.testing.assert_allclose(corner[0], np.arange(8) / 7, atol=1e-6)
    np.testing.assert_allclose(half[0], [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1], atol=1e-6)


def test_half_pixel_matrix_is_jax_image_resize_when_upsampling():
    maps = jax.random.normal(jax.random.key(0), (4, 7, 5))
    got = score.upsample_bilinear(maps, (112, 80), corner_aligned=False)
    want = jax.image.resize(maps, (4, 112, 80), "linear")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)


def _random_biases(variables):
    """Every bias (BatchNorm shifts, the head's) drawn from N(0, 0.5^2)."""
    keys = iter(jax.random.split(jax.random.key(7), 1000))
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf + 0.5 * jax.random.normal(next(keys), leaf.shape)
        if path[-1].key == "bias" else leaf, variables)


def _scores_by_loop(model, v, x, labels, feats, corner_aligned):
    """Target logits of every (image, channel) masked image, one forward per channel."""
    b, _, _, c = feats.shape
    scores = np.zeros((b, c))
    for ch in range(c):
        up = bilinear_numpy(feats[..., ch].astype(np.float64), x.shape[1:3], corner_aligned)
        lo, hi = up.min((1, 2), keepdims=True), up.max((1, 2), keepdims=True)
        masks = ((up - lo) / (hi - lo + 1e-8)).astype(np.float32)
        logits = np.asarray(model.apply(v, x * masks[..., None]))
        scores[:, ch] = logits[np.arange(b), labels]
    return scores


@pytest.mark.parametrize("corner_aligned", [True, False])
def test_score_cam_weights_are_the_softmax_of_masked_image_scores(resnet_case, corner_aligned):
    """Constant channels (zero, and a non-zero constant) on some images, none on
    another: those pairs share a zero-image forward inside the library; here every
    pair has its own forward. Chunk sizes that split the pairs unevenly, that make
    the zero images start a chunk, and one chunk for everything. Random biases: with
    the initial zero ones a zero image scores 0 for every class, which would hide a
    constant channel scored with another image's class."""
    model, v, x, labels = resnet_case
    v = _random_biases(v)
    probe = capture.probe(model.apply, v, x, labels, ("stage3",))
    feats = np.array(probe.features["stage3"])          # (3, h, w, C)
    c = feats.shape[-1]
    feats[0, :, :, 1] = 0.0
    feats[0, :, :, 5] = 0.7
    feats[2, :, :, :c // 2] = 3.0
    scores = _scores_by_loop(model, v, x, labels, feats, corner_aligned)
    w = np.exp(scores - scores.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    want = feats * w[:, None, None, :]

    def class_scores(imgs, cls):
        return jnp.take_along_axis(model.apply(v, imgs), cls[:, None], 1)[:, 0]

    live = 3 * c - 2 - c // 2
    for batch in (7, live, 1000):
        inputs = base.LayerInputs(features=jnp.asarray(feats), images=x, classes=labels,
                                  class_scores=class_scores, score_batch=batch)
        got = np.asarray(score.score_cam(inputs, corner_aligned=corner_aligned))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6,
                                   err_msg=f"score_batch={batch}")


def test_score_cam_runs_only_the_chunks_it_needs(resnet_case):
    """Forwards counted through a host callback: random features (no constant map) cost
    no extra forward; constant maps cost one zero image per image of the batch."""
    model, v, x, labels = resnet_case
    c = 16
    feats = np.random.default_rng(0).standard_normal((3, 4, 4, c)).astype(np.float32)
    seen = []

    def class_scores(imgs, cls):
        jax.debug.callback(lambda n: seen.append(int(n)), imgs.shape[0])
        return jnp.take_along_axis(model.apply(v, imgs), cls[:, None], 1)[:, 0]

    def forwards(f, batch):
        seen.clear()
        inputs = base.LayerInputs(images=x, classes=labels, class_scores=class_scores,
                                  score_batch=batch)
        run = jax.jit(lambda f: score.score_cam(inputs._replace(features=f)))
        jax.block_until_ready(run(jnp.asarray(f)))
        return sum(seen)

    assert forwards(feats, 3 * c) == 3 * c                 # one chunk, no zero images
    feats[:, :, :, : c // 2] = 0.0                         # half the channels dead everywhere
    live = 3 * (c - c // 2)
    assert forwards(feats, 4) == 4 * -(-(live + 3) // 4)   # live pairs + 3 zero images
