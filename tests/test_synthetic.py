"""synthetic_faces: deterministic, balanced, and expressions touch only their AU regions."""
import collections

import cv2
import numpy as np
import pytest

from data_prep import codebook, heatmaps, synthetic

S = 64


def _identity(k: int) -> synthetic.Identity:
    return synthetic.sample_identity(np.random.default_rng([99, k]))


def test_same_arguments_give_identical_bytes():
    a = synthetic.make_example(7, "train", 12, S)
    b = synthetic.make_example(7, "train", 12, S)
    assert a["image"].tobytes() == b["image"].tobytes()
    assert a["landmarks"].tobytes() == b["landmarks"].tobytes()
    assert (a["label"], a["id"]) == (b["label"], b["id"]) == (12 % 7, "train_000012")


def test_different_indices_splits_and_seeds_differ():
    base = synthetic.make_example(0, "train", 3, S)["image"]
    for other in (synthetic.make_example(0, "train", 10, S),   # same label, next identity
                  synthetic.make_example(0, "test", 3, S),
                  synthetic.make_example(1, "train", 3, S)):
        assert np.abs(other["image"].astype(int) - base).mean() > 5


def test_example_layout():
    ex = synthetic.make_example(0, "validation", 5, S, num_classes=8)
    assert ex["image"].shape == (S, S, 3) and ex["image"].dtype == np.uint8
    assert ex["landmarks"].shape == (68, 2) and ex["landmarks"].dtype == np.float32
    assert ex["id"] == "validation_000005" and ex["label"] == 5
    with pytest.raises(ValueError, match="split"):
        synthetic.make_example(0, "dev", 0, S)


def test_labels_are_balanced():
    for n in (7, 8):
        counts = collections.Counter(
            synthetic.make_example(0, "train", i, 16, num_classes=n)["label"]
            for i in range(10 * n))
        assert counts == {k: 10 for k in range(n)}


def test_landmarks_lie_inside_the_image():
    for i in range(150):
        lm = synthetic.make_example(3, "train", i, S, num_classes=8)["landmarks"]
        assert np.isfinite(lm).all()
        assert lm.min() >= 0 and lm.max() <= S - 1, i


def test_neutral_landmarks_are_mirror_symmetric_in_the_face_frame():
    p = synthetic.neutral_shape(_identity(0))
    mirrored = p[list(codebook.IBUG_MIRROR)] * (-1.0, 1.0)
    np.testing.assert_allclose(mirrored, p, atol=1e-12)


def test_landmarks_follow_the_drawn_pose():
    # Eyes above the nose above the mouth above the chin, in the face's own
    # up direction (the pose rotates at most 15 degrees).
    for k in range(20):
        _, lm = synthetic.draw_face(_identity(k), k % 7, S)
        order = [lm[19, 1], lm[36:48, 1].mean(), lm[30, 1], lm[48:68, 1].mean(), lm[8, 1]]
        assert np.all(np.diff(order) > 0), k


def _allowed_region(expr_lm, neutral_lm, label):
    """Where class `label` may change pixels: its heatmap on either shape,
    thresholded low and dilated by one pixel for anti-aliasing."""
    a, _ = heatmaps.rasterise(expr_lm, label, (S, S))
    b, _ = heatmaps.rasterise(neutral_lm, label, (S, S))
    zone = (np.maximum(a, b) > 0.02).astype(np.uint8)
    return cv2.dilate(zone, np.ones((3, 3), np.uint8)) > 0


@pytest.mark.parametrize("label", range(1, 8))
def test_expression_changes_pixels_only_inside_its_au_regions(label):
    for k in range(15):
        idn = _identity(k)
        neutral, neutral_lm = synthetic.draw_face(idn, 0, S)
        expr, expr_lm = synthetic.draw_face(idn, label, S)
        changed = np.abs(expr.astype(int) - neutral).max(axis=-1)
        allowed = _allowed_region(expr_lm, neutral_lm, label)
        assert changed[~allowed].max(initial=0) <= 2, (k, codebook.EXPRESSIONS[label])
        assert (changed[allowed] > 20).sum() >= 5, (k, codebook.EXPRESSIONS[label])


@pytest.mark.parametrize("label", range(1, 8))
def test_expression_moves_only_landmarks_inside_its_au_regions(label):
    idn = _identity(1)
    _, neutral_lm = synthetic.draw_face(idn, 0, S)
    _, expr_lm = synthetic.draw_face(idn, label, S)
    heat, _ = heatmaps.rasterise(expr_lm, label, (S, S))
    moved = np.linalg.norm(expr_lm - neutral_lm, axis=1) > 1e-4
    assert moved.any()
    xy = np.round(expr_lm[moved]).astype(int)
    assert (heat[xy[:, 1], xy[:, 0]] > 0.1).all()


def test_neutral_is_undeformed_and_the_jaw_never_moves():
    idn = _identity(2)
    np.testing.assert_array_equal(synthetic.expression_shape(idn, 0),
                                  synthetic.neutral_shape(idn))
    for label in range(1, 8):
        np.testing.assert_array_equal(synthetic.expression_shape(idn, label)[:17],
                                      synthetic.neutral_shape(idn)[:17])


def test_contempt_deforms_one_side_only():
    idn = _identity(3)
    d = synthetic.expression_shape(idn, 7) - synthetic.neutral_shape(idn)
    moved = set(np.flatnonzero(np.abs(d).sum(axis=1) > 0))
    assert moved and moved <= codebook.IBUG_RIGHT
