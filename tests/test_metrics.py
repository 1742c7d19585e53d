"""fer_jax.metrics: classification, the paper's aggregation, pointing, deletion/insertion."""
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from fer_jax.metrics import aggregate, classification, faithfulness, localisation


def test_confusion_matrix_counts_and_summary():
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 0, 2])
    m = classification.confusion_matrix(labels, preds, 4)
    expected = np.zeros((4, 4), int)
    for t, p in zip(labels, preds):
        expected[t, p] += 1
    np.testing.assert_array_equal(m, expected)
    s = classification.summary(m, ["a", "b", "c", "d"])
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["per_class_accuracy"] == {"a": 0.5, "b": 1.0, "c": pytest.approx(2 / 3)}
    assert s["mean_class_accuracy"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)  # "d" absent


def test_paper_aggregation_is_unweighted_over_non_neutral_classes_with_valid_maps():
    values = np.array([0.9, 0.1, 0.2, 0.4, 0.8, 0.5, 0.3])
    labels = np.array([0, 1, 1, 1, 2, 3, 3])
    keep = np.array([True, True, True, True, True, False, True])
    assert aggregate.class_means(values, labels, keep, 7) == {
        0: 0.9, 1: pytest.approx(0.7 / 3), 2: 0.8, 3: 0.3}
    # Neutral (class 0) left out; class 1's three samples weigh as much as class 2's one.
    assert aggregate.paper_score(values, labels, keep, 7) == pytest.approx(
        (0.7 / 3 + 0.8 + 0.3) / 3)
    assert np.isnan(aggregate.paper_score(values, labels, np.zeros(7, bool), 7))


def test_bootstrap_interval_is_the_percentile_interval_of_resampled_statistics():
    # Two samples 0 and 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4,
    # so the 2.5th and 97.5th percentiles over many draws are 0 and 1.
    values = np.array([0.0, 1.0])
    assert aggregate.bootstrap_ci95(lambda i: values[i].mean(), 2) == (0.0, 1.0)
    # One sample: every resample is that sample.
    assert aggregate.bootstrap_ci95(lambda i: 0.3 + 0 * i.sum(), 1) == (0.3, 0.3)
    # Draws where the statistic is undefined are left out: needing sample 0 leaves means
    # 0 (sample 0 twice) and 0.5 (both samples).
    low, high = aggregate.bootstrap_ci95(
        lambda i: values[i].mean() if (i == 0).any() else float("nan"), 2)
    assert (low, high) == (0.0, 0.5)
    assert all(np.isnan(aggregate.bootstrap_ci95(lambda i: 1.0, 0)))
    # Many samples: close to the normal interval of the mean.
    big = np.random.default_rng(0).normal(2.0, 1.0, 400)
    low, high = aggregate.bootstrap_ci95(lambda i: big[i].mean(), len(big), draws=1000)
    half = 1.96 * big.std(ddof=1) / np.sqrt(len(big))
    assert low == pytest.approx(big.mean() - half, abs=0.2 * half)
    assert high == pytest.approx(big.mean() + half, abs=0.2 * half)


def test_pointing_game_hits_when_the_maximum_lies_on_the_au_map():
    heat = np.zeros((3, 8, 8), np.float32)
    heat[:, 2:4, 2:4] = 1.0
    heat[:, 6, 6] = 0.5                       # not above the 0.5 threshold
    cam = np.zeros((3, 8, 8), np.float32)
    cam[0, 3, 3] = 1.0                        # on the AUs
    cam[1, 6, 6] = 1.0                        # on the 0.5 pixel: a miss
    # sample 2: a flat map; the first maximum is (0, 0): a miss
    hits = localisation.pointing_hits(jnp.asarray(cam), jnp.asarray(heat))
    np.testing.assert_array_equal(np.asarray(hits), [1.0, 0.0, 0.0])


def test_blur_is_a_truncated_gaussian_with_mirrored_edges():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 224, 224, 3)).astype(np.float32)
    ours = np.asarray(faithfulness.blur(jnp.asarray(images)))
    # RISE at 224 px: sigma 5 in an 11-pixel window (radius 5).
    ref = ndimage.gaussian_filter(images, sigma=(0, 5, 5, 0), mode="mirror", truncate=1.0)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_pixel_ranks_put_the_highest_value_first_and_keep_ties_in_order():
    cam = jnp.asarray([[[0.1, 0.9], [0.5, 0.5]]])
    np.testing.assert_array_equal(np.asarray(faithfulness.pixel_ranks(cam)), [[3, 0, 1, 2]])


def test_deletion_and_insertion_curves_match_a_direct_computation():
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(2, 6, 6, 3)).astype(np.float32)
    cam_maps = rng.uniform(size=(3, 2, 6, 6)).astype(np.float32)   # 3 methods
    classes = jnp.array([0, 1])
    steps = 4

    def class_probs(x, c):   # a toy "model": the mean of the channel named by the class
        return jnp.take_along_axis(jnp.mean(x, axis=(1, 2)), c[:, None], 1)[:, 0]

    deletion, insertion = faithfulness.curves(class_probs, jnp.asarray(images),
                                              jnp.asarray(cam_maps), classes, steps)
    blurred = np.asarray(faithfulness.blur(jnp.asarray(images)))
    for m in range(3):
        for b in range(2):
            order = np.argsort(-cam_maps[m, b].ravel(), kind="stable")
            c = int(classes[b])
            for k in range(steps + 1):
                done = np.zeros(36, bool)
                done[order[:int(round(k * 36 / steps))]] = True
                done = done.reshape(6, 6)
                img, blur = images[b, ..., c], blurred[b, ..., c]
                np.testing.assert_allclose(deletion[m, b, k], np.where(done, 0, img).mean(),
                                           rtol=1e-5)
                np.testing.assert_allclose(insertion[m, b, k], np.where(done, img, blur).mean(),
                                           rtol=1e-5)
    curve = np.asarray(deletion)
    np.testing.assert_allclose(np.asarray(faithfulness.auc(deletion)),
                               np.trapezoid(curve, dx=1 / steps, axis=-1), rtol=1e-6)
