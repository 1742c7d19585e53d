"""rasterise lights exactly a class's AU regions, flips, scales and fails safely."""
import dataclasses

import numpy as np
import pytest

from data_prep import codebook, heatmaps, synthetic

SIZE = (128, 128)


def _frontal_face(size: int = 128) -> np.ndarray:
    """(68, 2) landmarks of an upright, mirror-symmetric synthetic face."""
    idn = synthetic.sample_identity(np.random.default_rng(3))
    idn = dataclasses.replace(idn, rotation=0.0, translation=(0.0, 0.0), scale=0.6)
    return synthetic.draw_face(idn, 0, size)[1].astype(np.float64)


# docs/method.md's region table restated as expected centres, independently of the
# codebook's vocabulary: AU -> function(landmarks, s) -> list of (x, y).
def _mid(a, b):
    return (np.asarray(a) + np.asarray(b)) / 2.0


EXPECTED_CENTRES = {
    1: lambda l, s: [l[20], l[23]],
    2: lambda l, s: [l[18], l[25]],
    4: lambda l, s: [_mid(l[19], l[24])],
    5: lambda l, s: [l[36:42].mean(0), l[42:48].mean(0)],
    6: lambda l, s: [l[41] + (0, 0.22 * s), l[46] + (0, 0.22 * s)],
    7: lambda l, s: [l[36:42].mean(0), l[42:48].mean(0)],
    9: lambda l, s: [(l[31, 0], l[29, 1]), (l[35, 0], l[29, 1])],
    10: lambda l, s: [l[49] - (0, 0.04 * s), l[53] - (0, 0.04 * s)],
    12: lambda l, s: [l[48], l[54]],
    14: lambda l, s: [l[48] - (0.12 * s, 0), l[54] + (0.12 * s, 0)],
    15: lambda l, s: [l[48], l[54]],
    16: lambda l, s: [l[59], l[55]],
    17: lambda l, s: [_mid(l[57], l[8])],
    20: lambda l, s: [_mid(l[48], l[5]), _mid(l[54], l[11])],
    23: lambda l, s: [l[48:68].mean(0)],
    24: lambda l, s: [l[48:68].mean(0)],
    25: lambda l, s: [l[51], l[57]],
    26: lambda l, s: [l[48:68].mean(0)],
    27: lambda l, s: [l[48:68].mean(0)],
}


def _at(heat: np.ndarray, xy) -> float:
    x, y = np.round(np.asarray(xy)).astype(int)
    return float(heat[y, x])


@pytest.mark.parametrize("label", range(1, 7))
def test_each_class_peaks_on_every_one_of_its_au_centres(label):
    lm = _frontal_face()
    s = np.ptp(lm[:, 0])
    heat, valid = heatmaps.rasterise(lm, label, SIZE)
    assert valid
    for au in codebook.class_aus(label):
        for centre in EXPECTED_CENTRES[au](lm, s):
            assert _at(heat, centre) > 0.5, (codebook.EXPRESSIONS[label], au)


def test_classes_that_differ_light_different_regions():
    lm = _frontal_face()
    s = np.ptp(lm[:, 0])
    happy, _ = heatmaps.rasterise(lm, 1, SIZE)     # 6, 12, 25: cheeks and mouth
    surprise, _ = heatmaps.rasterise(lm, 2, SIZE)  # 1, 2, 5, 26, 27: brows, eyes, mouth
    for brow in EXPECTED_CENTRES[1](lm, s) + EXPECTED_CENTRES[2](lm, s):
        assert _at(happy, brow) < 0.02 and _at(surprise, brow) > 0.5
    for cheek in EXPECTED_CENTRES[6](lm, s):
        assert _at(surprise, cheek) < 0.05 and _at(happy, cheek) > 0.5
    # The forehead top and the chin are far from every region of both.
    for far in (lm[8], (lm[27, 0], lm[19, 1] - 0.45 * s)):
        assert _at(happy, far) < 0.02 and _at(surprise, far) < 0.02


def test_contempt_lights_only_the_subjects_right_mouth_corner():
    lm = _frontal_face()
    heat, valid = heatmaps.rasterise(lm, codebook.EXPRESSIONS.index("Contempt"), SIZE)
    assert valid and _at(heat, lm[48]) > 0.5 and _at(heat, lm[54]) < 0.02


def test_map_is_float32_in_unit_range_with_max_one():
    lm = _frontal_face()
    for label in range(1, 8):
        heat, valid = heatmaps.rasterise(lm, label, (96, 128))
        assert valid and heat.dtype == np.float32 and heat.shape == (96, 128)
        assert heat.min() == pytest.approx(0.0, abs=1e-6) and heat.max() == pytest.approx(1.0)


def test_neutral_is_invalid_and_all_zero():
    heat, valid = heatmaps.rasterise(_frontal_face(), 0, SIZE)
    assert not valid and heat.shape == SIZE and not heat.any()


@pytest.mark.parametrize("corrupt", ["nan", "inf", "none", "degenerate"])
def test_failed_landmarks_are_invalid(corrupt):
    lm = _frontal_face()
    if corrupt == "nan":
        lm[30] = np.nan
    elif corrupt == "inf":
        lm[5, 1] = np.inf
    elif corrupt == "degenerate":
        lm[:] = lm[30]
    heat, valid = heatmaps.rasterise(None if corrupt == "none" else lm, 3, SIZE)
    assert not valid and not heat.any()


def test_landmarks_outside_the_image_are_invalid_but_partly_inside_is_valid():
    lm = _frontal_face()
    assert not heatmaps.rasterise(lm + (1000.0, 0.0), 3, SIZE)[1]
    assert not heatmaps.rasterise(lm - (0.0, 400.0), 3, SIZE)[1]
    # Shifted half out of the image: the mouth regions still show.
    heat, valid = heatmaps.rasterise(lm - (0.0, 60.0), 1, SIZE)
    assert valid and heat.max() == pytest.approx(1.0)


@pytest.mark.parametrize("label", [-1, 8])
def test_label_out_of_range_raises(label):
    with pytest.raises(ValueError, match=str(label)):
        heatmaps.rasterise(_frontal_face(), label, SIZE)


@pytest.mark.parametrize("label", range(1, 7))
def test_flipping_landmarks_flips_the_map_of_symmetric_classes(label):
    lm = _frontal_face() + (7.3, 2.0)  # off-centre, so the flip really moves it
    heat, _ = heatmaps.rasterise(lm, label, SIZE)
    flipped, valid = heatmaps.rasterise(
        heatmaps.flip_landmarks_horizontally(lm, SIZE[1]), label, SIZE)
    assert valid
    np.testing.assert_allclose(flipped, np.fliplr(heat), atol=1e-4)


def test_flip_renumbers_points_to_their_mirror_partners():
    lm = _frontal_face() + (5.0, 0.0)
    w = SIZE[1]
    f = heatmaps.flip_landmarks_horizontally(lm, w)
    np.testing.assert_allclose(f[0], (w - 1 - lm[16, 0], lm[16, 1]))
    np.testing.assert_allclose(f[48], (w - 1 - lm[54, 0], lm[54, 1]))
    np.testing.assert_allclose(f[30], (w - 1 - lm[30, 0], lm[30, 1]))
    np.testing.assert_allclose(heatmaps.flip_landmarks_horizontally(f, w), lm)
    # Still iBUG: the flipped face's point 0 is on the image's left again.
    assert f[0, 0] < f[16, 0] and f[36, 0] < f[45, 0] and f[48, 0] < f[54, 0]


def test_map_is_scale_invariant():
    lm = _frontal_face(128)
    for label in range(1, 7):
        small, _ = heatmaps.rasterise(lm, label, (128, 128))
        # Pixel centres at integers: x -> 2x + 0.5 maps a pixel onto its 2x2 block.
        big, _ = heatmaps.rasterise(2.0 * lm + 0.5, label, (256, 256))
        pooled = big.reshape(128, 2, 128, 2).mean(axis=(1, 3))
        # Point samples vs 2x2 means differ only by the blobs' curvature.
        np.testing.assert_allclose(pooled, small, atol=0.04)
        assert np.abs(pooled - small).mean() < 2e-3


def test_to_uint8_scales_to_a_single_channel_byte_image():
    m = np.array([[0.0, 0.5], [1.0, 1.2]], np.float32)
    u = heatmaps.to_uint8(m)
    assert u.shape == (2, 2, 1) and u.dtype == np.uint8
    assert u[..., 0].tolist() == [[0, 128], [255, 255]]


def test_to_uint8_quantises_to_64_levels_within_two_grey_levels():
    m = np.linspace(0.0, 1.0, 10_001, dtype=np.float32)[None]
    u = heatmaps.to_uint8(m)[..., 0].astype(np.float64)
    assert np.abs(u - m * 255.0).max() <= 2.0 + 1e-6
    assert len(np.unique(u)) == 65  # 0, 4, ..., 252 and 255
