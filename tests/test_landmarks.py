"""dlib landmarks on a real face, plausibility checks and the source fallbacks."""
import os

import cv2
import numpy as np
import pytest

from data_prep import landmarks
from data_prep.builders import features

try:
    from tests import fixtures_real as fx
except ImportError:  # tests/ on sys.path (pytest's default rootdir insertion)
    import fixtures_real as fx


def _rotate_points(points, degrees, centre):
    m = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return points @ m[:, :2].T + m[:, 2]


def test_predictor_file_comes_with_face_recognition_models():
    path = landmarks.predictor_path()
    assert path.endswith(landmarks.PREDICTOR_FILE)
    assert os.path.getsize(path) > 50_000_000  # the 68-point model is ~95 MB


def test_every_source_produced_is_stored_under_its_fixed_record_index(tmp_path):
    """Records store a source as an index into LANDMARK_SOURCES, so the names and their
    order are part of the on-disk format (a reordering would silently relabel datasets
    already built). Each source that `locate` or the synthetic builder produces is a
    name of the record layout and survives the layout's encode/decode unchanged, and
    every name of the layout is produced by something."""
    from data_prep.builders import synthetic_faces
    assert features.LANDMARK_SOURCES == ("exact", "dataset", "dlib", "fallback_box", "failed")
    crop = fx.face_crop("orig", 96)
    by_dlib = landmarks.locate(crop)
    produced = {
        "dlib": by_dlib.source,
        "dataset": landmarks.locate(crop, dataset_points=by_dlib.points + 1.5).source,
        "fallback_box": landmarks.locate(fx.face_crop("orig", 160, margin=-0.35)).source,
        "failed": landmarks.locate(fx.flat_image(96)).source,
    }
    builder = synthetic_faces.SyntheticFaces(config="tiny", data_dir=str(tmp_path))
    _, example = next(iter(builder._generate_examples("test", 1)))
    produced["exact"] = example["landmark_source"]
    assert produced == {name: name for name in features.LANDMARK_SOURCES}
    for layout in (features.fer_features(96), builder.info.features):
        label = layout["landmark_source"]
        for index, name in enumerate(features.LANDMARK_SOURCES):
            assert label.encode_example(name) == index, name
            assert label.int2str(index) == name


def test_dlib_finds_68_points_on_a_real_face():
    image = fx.astronaut()
    boxes = landmarks.detect_faces(image)
    assert boxes, "dlib found no face in skimage's astronaut"
    x0, y0, x1, y1 = boxes[0]
    # The astronaut's face: about x 175-268, y 76-172 in the 512 px photo.
    assert 150 < x0 < 200 and 240 < x1 < 290 and 50 < y0 < 100 and 150 < y1 < 200
    points = landmarks.predict(image, boxes[0])
    assert points.shape == (68, 2) and points.dtype == np.float32
    parts = landmarks.region_means(points)
    assert parts["eyes"][1] < parts["nose"][1] < parts["mouth"][1]
    assert np.all((points[:, 0] > x0 - 20) & (points[:, 0] < x1 + 20))
    assert landmarks.is_plausible(points, image.shape[:2])


@pytest.mark.parametrize("size", [96, 224])
def test_locate_on_a_face_crop_uses_dlib(size):
    crop = fx.face_crop("orig", size)
    result = landmarks.locate(crop)
    assert result.source == "dlib"
    parts = landmarks.region_means(result.points)
    assert parts["eyes"][1] < parts["nose"][1] < parts["mouth"][1]
    # A centred crop: the nose is near the middle.
    assert abs(parts["nose"][0] - size / 2) < 0.15 * size


def test_dataset_landmarks_are_used_unless_dlib_is_forced():
    crop = fx.face_crop("orig", 96)
    shipped = landmarks.locate(crop).points + 1.5  # differ from dlib's on purpose
    used = landmarks.locate(crop, dataset_points=shipped)
    assert used.source == "dataset"
    np.testing.assert_array_equal(used.points, shipped)
    forced = landmarks.locate(crop, dataset_points=shipped, force_dlib=True)
    assert forced.source == "dlib"


def test_implausible_dataset_landmarks_fall_back_to_dlib():
    crop = fx.face_crop("orig", 96)
    upside_down = landmarks.locate(crop).points.copy()
    upside_down[:, 1] = 95 - upside_down[:, 1]
    assert not landmarks.is_plausible(upside_down, (96, 96))
    assert landmarks.locate(crop, dataset_points=upside_down).source == "dlib"
    nan = np.full((68, 2), np.nan, np.float32)
    assert landmarks.locate(crop, dataset_points=nan).source == "dlib"


def test_plausibility_accepts_in_plane_rotation():
    points = landmarks.predict(fx.astronaut(), fx.FACE_BOX)
    for degrees in (-40, 25, 60):
        rotated = _rotate_points(points.astype(np.float64), degrees, (221.0, 124.0))
        assert landmarks.is_plausible(rotated, (512, 512)), degrees
    tiny = (points - points.mean(0)) * 0.05 + 256
    assert not landmarks.is_plausible(tiny, (512, 512))
    outside = points + 2000
    assert not landmarks.is_plausible(outside, (512, 512))


def test_no_detection_falls_back_to_the_face_box():
    # Half the face cut off: too little for the HOG detector, enough for the
    # predictor given the box where the face would be.
    crop = fx.face_crop("orig", 160, margin=-0.35)
    assert not landmarks.detect_faces(crop)
    result = landmarks.locate(crop)
    assert result.source == "fallback_box"
    assert landmarks.is_plausible(result.points, crop.shape[:2])
    assert landmarks.locate(crop, use_fallback=False).source == "failed"


def test_flat_image_fails_with_zero_points():
    result = landmarks.locate(fx.flat_image(96))
    assert result.source == "failed"
    assert result.points.shape == (68, 2) and not result.points.any()


def test_parse_flat():
    flat = np.arange(136, dtype=np.float64)
    points = landmarks.parse_flat(flat)
    assert points.shape == (68, 2) and points[1, 0] == 2 and points[1, 1] == 3
    assert landmarks.parse_flat(flat[:10]) is None
    assert landmarks.parse_flat(np.full(136, np.nan)) is None
