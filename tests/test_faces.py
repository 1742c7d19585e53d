"""data_prep.faces: reading photos, finding faces, the builders' crop, the model input.

Each behaviour is compared with an independent computation: NumPy padding and
slicing for the crop, a bright dot for the coordinate map, the pasted
positions for the detected faces, and fer_jax's TensorFlow evaluation code for
the model input.
"""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_prep import faces, landmarks
from data_prep.builders import face_records, image_folder, rafdb

try:
    from tests import fixtures_real as fx
except ImportError:  # tests/ on sys.path (pytest's default rootdir insertion)
    import fixtures_real as fx


# --- reading -----------------------------------------------------------------

def test_read_rgb_turns_every_channel_layout_into_8_bit_rgb(tmp_path):
    photo = fx.variant("small")[0]  # (256, 256, 3)
    grey_pixels = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    grey = fx.write_image(str(tmp_path / "grey.png"), grey_pixels)
    cmyk = fx.write_cmyk_jpeg(str(tmp_path / "cmyk.jpg"), photo)
    rgba = str(tmp_path / "rgba.png")
    cv2.imwrite(rgba, np.dstack([photo[..., ::-1], np.full(photo.shape[:2], 7, np.uint8)]))
    deep = str(tmp_path / "deep.png")
    cv2.imwrite(deep, photo[..., ::-1].astype(np.uint16) * 257)  # 16-bit, same picture
    read = {}
    for path in (grey, cmyk, rgba, deep):
        image, scale = faces.read_rgb(path)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8 and scale == 1.0, path
        read[path] = image
    for channel in range(3):  # grey: the same levels in R, G and B
        np.testing.assert_array_equal(read[grey][..., channel], grey_pixels)
    np.testing.assert_array_equal(read[rgba], photo)  # alpha dropped, colours kept
    np.testing.assert_array_equal(read[deep], photo)  # 16 bits -> the top 8
    assert np.abs(read[cmyk].astype(int) - photo).mean() < 8  # colours survive CMYK (JPEG)


def test_read_rgb_decodes_huge_jpegs_reduced(tmp_path):
    big = cv2.resize(fx.astronaut(), (2048, 2048), interpolation=cv2.INTER_LINEAR)
    path = fx.write_image(str(tmp_path / "big.jpg"), big)
    image, scale = faces.read_rgb(path, max_pixels=300_000)
    # 4.2 M pixels > 300 k: halved twice (1/4) to 262 k pixels.
    assert image.shape == (512, 512, 3) and scale == 0.25
    assert np.abs(image.astype(float) - fx.astronaut()).mean() < 6  # the same picture
    image, scale = faces.read_rgb(path)  # under MAX_DECODE_PIXELS: full size
    assert image.shape == (2048, 2048, 3) and scale == 1.0
    assert 2048 * 2048 < faces.MAX_DECODE_PIXELS


@pytest.mark.parametrize("kind", ["corrupt", "empty", "text", "missing"])
def test_read_rgb_unreadable_raises_naming_the_path(tmp_path, kind):
    path = str(tmp_path / f"{kind}_file.jpg")
    if kind == "corrupt":
        fx.write_corrupt(path)
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "text":
        with open(path, "w") as f:
            f.write("name,label\nx.jpg,happy\n")
    with pytest.raises(faces.UnreadableImage) as err:
        faces.read_rgb(path)
    assert str(err.value).startswith(path + ": "), str(err.value)
    if kind == "empty":
        assert "empty" in str(err.value)


# --- geometry ----------------------------------------------------------------

@pytest.mark.parametrize("box,margin", [((175, 76, 268, 172), 0.3), ((10, 20, 50, 30), 0.0),
                                        ((-5.5, 3.25, 20.0, 90.0), 1.0), ((0, 0, 1, 1), -0.5)])
def test_square_box_is_the_enlarged_square_around_the_centre(box, margin):
    x0, y0, x1, y1 = faces.square_box(box, margin)
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + margin)
    assert x1 - x0 == pytest.approx(side) and y1 - y0 == pytest.approx(side)
    assert (x0 + x1) / 2 == pytest.approx((box[0] + box[2]) / 2)
    assert (y0 + y1) / 2 == pytest.approx((box[1] + box[3]) / 2)
    with pytest.raises(ValueError, match="empty"):
        faces.square_box((box[2], box[1], box[0], box[3]), margin)


def _crop_by_padding(image, box, size):
    """Independent crop: pad the image with black on every side, slice, resize."""
    x0, y0, x1, y1 = (int(np.floor(v + 0.5)) for v in box)
    pad = max(0, -x0, -y0, x1 - image.shape[1], y1 - image.shape[0])
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    region = padded[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    shrink = region.shape[0] > size or region.shape[1] > size
    return cv2.resize(region, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@pytest.mark.parametrize("box,size", [
    ((159.1, 61.6, 283.9, 186.4), 96),  # inside: the astronaut's RAF-DB crop
    ((-40.0, 400.0, 100.0, 540.0), 64),  # across the left and bottom borders
    ((600.0, 600.0, 650.0, 650.0), 32),  # entirely outside: black
    ((200.0, 100.0, 240.0, 140.0), 100),  # enlarged
])
def test_crop_resize_matches_padding_and_slicing(box, size):
    image = fx.astronaut()
    crop, transform = faces.crop_resize(image, box, size)
    np.testing.assert_array_equal(crop, _crop_by_padding(image, box, size))
    x0, y0 = (int(np.floor(v + 0.5)) for v in box[:2])
    assert transform.origin == (x0, y0)
    if box[0] >= 600:
        assert not crop.any()


def test_crop_transform_puts_a_dot_where_it_maps_it():
    """A bright dot in the photo lands, in the crop, on transform.points of it."""
    for box, size, dot in (((20, 30, 60, 70), 120, (37, 52)),   # enlarged 3x (bilinear)
                           ((0, 0, 80, 80), 40, (50, 22))):     # shrunk 2x (area)
        image = np.zeros((100, 100, 3), np.uint8)
        x, y = dot
        image[y:y + 2, x:x + 2] = 255  # a 2x2 dot: its centre is (x + 0.5, y + 0.5)
        crop, transform = faces.crop_resize(image, box, size)
        weight = crop[..., 0].astype(float)
        ys, xs = np.mgrid[:size, :size]
        centroid = [(weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()]
        np.testing.assert_allclose(transform.points(np.array([[x + 0.5, y + 0.5]]))[0],
                                   centroid, atol=0.05)
        assert transform.box(box) == pytest.approx((0, 0, size, size))
    whole, t = faces.crop_resize(np.zeros((50, 100, 3), np.uint8), None, 20)
    assert whole.shape == (20, 20, 3) and t.scale == (0.2, 0.4) and t.origin == (0.0, 0.0)


def test_face_crop_is_the_builders_square_crop_with_their_margin():
    assert faces.FACE_MARGIN == 0.3  # RAF-DB's "face box enlarged by 30%"
    assert {c.margin for c in image_folder.ImageFolder.BUILDER_CONFIGS} == {faces.FACE_MARGIN}
    original = [c for c in rafdb.Rafdb.BUILDER_CONFIGS if c.name == "original"][0]
    assert original.margin == faces.FACE_MARGIN
    photo, box = fx.variant("orig")
    crop, transform = faces.face_crop(photo, box, 112)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = 1.3 * max(box[2] - box[0], box[3] - box[1]) / 2
    np.testing.assert_array_equal(
        crop, _crop_by_padding(photo, (cx - half, cy - half, cx + half, cy + half), 112))
    assert transform.scale[0] == pytest.approx(112 / (2 * half), rel=0.01)
    # No box: the whole photo, squeezed to a square.
    whole, _ = faces.face_crop(photo[:, :300], None, 64)
    np.testing.assert_array_equal(
        whole, cv2.resize(photo[:, :300], (64, 64), interpolation=cv2.INTER_AREA))


def test_face_crop_keeps_a_photo_that_already_is_a_face_crop_whole():
    crop_photo = fx.face_crop("orig", 160)  # the face fills the photo
    box = faces.find_faces(crop_photo)[0]
    x0, y0, x1, y1 = faces.square_box(box, faces.FACE_MARGIN)
    assert (x1 - x0) ** 2 >= faces.ALREADY_CROPPED * 160 * 160  # the premise
    crop, transform = faces.face_crop(crop_photo, box, 112)
    np.testing.assert_array_equal(
        crop, cv2.resize(crop_photo, (112, 112), interpolation=cv2.INTER_AREA))
    assert transform.origin == (0.0, 0.0)
    # Unless told not to: then the square is cut, with black beyond the photo.
    tight, _ = faces.face_crop(crop_photo, box, 112, keep_face_crops_whole=False)
    np.testing.assert_array_equal(tight, _crop_by_padding(crop_photo, (x0, y0, x1, y1), 112))


def test_builder_record_image_is_face_crop_of_find_faces(tmp_path):
    """Training and serving crop a photo identically: image_folder's record image
    is the JPEG of face_crop(photo, find_faces(photo)[0])."""
    path = fx.write_image(str(tmp_path / "happy" / "a.jpg"), fx.astronaut())
    settings = face_records.RecordSettings(image_size=96, margin=faces.FACE_MARGIN,
                                           find_face=True)
    record = face_records.make_record(face_records.FaceTask("a", path, 1), settings)
    photo, _ = faces.read_rgb(path)
    crop, _ = faces.face_crop(photo, faces.find_faces(photo)[0], 96)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
    assert ok and record.example["image"] == jpeg.tobytes()


# --- finding faces -----------------------------------------------------------

# Astronaut tiles pasted on a 640x480 grey canvas: (x, y, side). The tile is the
# face box made square and enlarged by 60%, so each face is about side / 1.6.
_PASTED = ((464, 32, 160), (16, 120, 264), (296, 32, 160), (328, 256, 200))


def _tile():
    """The astronaut's face with a margin: (tile (T, T, 3), the tile's box in the photo)."""
    tile_box = faces.square_box(fx.FACE_BOX, 0.6)
    tx0, ty0, tx1, ty1 = (int(round(v)) for v in tile_box)
    return fx.astronaut()[ty0:ty1, tx0:tx1], (tx0, ty0, tx1, ty1)


def _pasted(height, width, placed):
    """A grey photo (height, width) with the face tile pasted at each (x, y, side), and the
    face box of each, in the order given."""
    tile, (tx0, ty0, tx1, ty1) = _tile()
    canvas = np.full((height, width, 3), 90, np.uint8)
    expected = []
    for x, y, side in placed:
        canvas[y:y + side, x:x + side] = cv2.resize(tile, (side, side),
                                                    interpolation=cv2.INTER_AREA)
        k = side / (tx1 - tx0)
        fx0, fy0, fx1, fy1 = fx.FACE_BOX
        expected.append(((fx0 - tx0) * k + x, (fy0 - ty0) * k + y,
                         (fx1 - tx0) * k + x, (fy1 - ty0) * k + y))
    return canvas, expected


def _composite():
    """(photo, expected face boxes in the order find_faces must give them)."""
    canvas, expected = _pasted(480, 640, _PASTED)
    # Largest first; the two equal tiles (side 160) left to right.
    order = sorted(range(len(_PASTED)), key=lambda i: (-_PASTED[i][2], _PASTED[i][0]))
    return canvas, [expected[i] for i in order]


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    return inter / (area(a) + area(b) - inter)


def test_find_faces_one_box_per_face_largest_first():
    photo, expected = _composite()
    boxes = faces.find_faces(photo)
    assert len(boxes) == len(expected), boxes
    for box, want in zip(boxes, expected):
        assert _iou(box, want) > 0.5, (box, want)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert areas == sorted(areas, reverse=True)
    assert faces.find_faces(photo, max_faces=2) == boxes[:2]
    assert faces.find_faces(np.ascontiguousarray(photo)) == boxes  # the same on every call
    with pytest.raises(ValueError, match="max_faces"):
        faces.find_faces(photo, max_faces=0)


def test_find_faces_in_large_and_tiny_photos_and_none_in_a_flat_one():
    photo, expected = _composite()
    big = cv2.resize(photo, (1600, 1200), interpolation=cv2.INTER_LINEAR)  # searched at 1024
    boxes = faces.find_faces(big)
    assert len(boxes) == len(expected)
    assert _iou([v / 2.5 for v in boxes[0]], expected[0]) > 0.5
    tiny = fx.face_crop("orig", 32)  # a FER2013-sized face crop: found at 160 px
    assert not landmarks.detect_faces_in_photo(tiny)  # (the photo passes miss it)
    (box,) = faces.find_faces(tiny)
    assert 0 <= box[0] < 16 < box[2] <= 33 and 0 <= box[1] < 16 < box[3] <= 33
    assert faces.find_faces(fx.flat_image(300)) == []


def test_a_70_px_face_beside_a_large_one_is_found_in_a_1000_px_photo():
    """A group photo's small faces: a 1000 px photo is searched at full size, so a face of
    ~70 px (its landmark box; dlib found such faces from ~60 px) is found although a larger
    face spares the upsampled pass. (Searched at 640 px, as before, it was 45 px and
    missed: there faces needed ~90 px of the photo.)"""
    _, (tx0, _, tx1, _) = _tile()
    face_share = (fx.FACE_BOX[2] - fx.FACE_BOX[0]) / (tx1 - tx0)
    canvas, expected = _pasted(667, 1000, [(x, y, int(round(face / face_share)))
                                           for x, y, face in ((60, 120, 260), (700, 300, 70))])
    boxes = faces.find_faces(canvas)
    assert len(boxes) == 2, boxes
    for box, want in zip(boxes, expected):
        assert _iou(box, want) > 0.5, (box, want)


def test_largest_first_breaks_ties_left_to_right_then_top_to_bottom():
    boxes = [(50, 0, 60, 10), (0, 50, 10, 60), (0, 0, 10, 10), (0, 0, 20, 20), (5, 5, 10, 10)]
    assert landmarks.largest_first(boxes) == [
        (0, 0, 20, 20), (0, 0, 10, 10), (0, 50, 10, 60), (50, 0, 60, 10), (5, 5, 10, 10)]


# --- model input -------------------------------------------------------------

def _evaluation_input(crop, size):
    """The image the tf.data evaluation pipeline made of a record whose image is `crop`
    (before the Grain pipeline, which calls faces.model_input's parts): uint8 to float,
    tf.image.resize(antialias=True) when the side differs, clip, ImageNet normalisation."""
    import tensorflow as tf
    image = tf.image.convert_image_dtype(tf.constant(crop), tf.float32)
    if crop.shape[0] != size or crop.shape[1] != size:
        image = tf.image.resize(image, (size, size), antialias=True)
    image = tf.clip_by_value(image, 0.0, 1.0)
    return ((image - faces.IMAGENET_MEAN) / faces.IMAGENET_STD).numpy()


def test_normalise_is_imagenet_normalisation():
    image = np.array([[[0, 128, 255], [255, 0, 64]]], np.uint8)  # (1, 2, 3)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (image / 255.0 - mean) / std
    out = faces.normalise(image)
    assert out.dtype == np.float32 and out.shape == (1, 2, 3)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(faces.normalise(image / 255.0), expected, rtol=0, atol=1e-6)
    assert faces.IMAGENET_MEAN == tuple(mean) and faces.IMAGENET_STD == tuple(std)


def test_model_input_without_resize_is_bit_identical_to_evaluation():
    crop, _ = faces.face_crop(fx.astronaut(), fx.FACE_BOX, 64)
    ours = faces.model_input(crop, 64)
    assert ours.dtype == np.float32 and ours.shape == (64, 64, 3)
    np.testing.assert_array_equal(ours, _evaluation_input(crop, 64))
    np.testing.assert_array_equal(ours, faces.normalise(crop))


@pytest.mark.parametrize("record_size,image_size", [(112, 64), (224, 112), (48, 64)])
def test_model_input_with_resize_matches_evaluation(record_size, image_size):
    """A record image resized as evaluation does (tf.image.resize, antialias=True).

    Measured max abs difference, in normalised units: 1.3e-6 for 112 -> 64,
    8.3e-7 for 224 -> 112, 6.0e-7 for 48 -> 64 (float32 rounding: the resize
    weights are TensorFlow's, computed the same way); 1e-5 is ~6e-4 grey levels.
    """
    crop, _ = faces.face_crop(fx.astronaut(), fx.FACE_BOX, record_size)
    ours = faces.model_input(crop, image_size)
    assert ours.dtype == np.float32 and ours.shape == (image_size, image_size, 3)
    diff = float(np.abs(ours - _evaluation_input(crop, image_size)).max())
    assert diff < 1e-5, f"max abs difference {diff:.2e} (measured 1.3e-6 for 112 -> 64)"
    # Not trivially close: a plain bilinear resize (no antialiasing) is far off.
    if record_size > image_size:
        plain = cv2.resize(crop, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
        assert np.abs(faces.normalise(plain) - ours).max() > 0.1


def test_resize_antialiased_matches_tensorflow_on_non_square_images():
    import tensorflow as tf
    image = np.random.default_rng(0).random((97, 131, 3), np.float32)
    ours = faces.resize_antialiased(image, 64)
    theirs = tf.image.resize(image, (64, 64), antialias=True).numpy()
    assert ours.shape == (64, 64, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_grey_input_rule_is_opencvs_grey_scaled_to_minus_one_one():
    crop, _ = faces.face_crop(fx.astronaut(), fx.FACE_BOX, 64)
    rule = faces.InputRule(faces.LANDMARKS_CROP, grey=True, mean=(0.5,) * 3, std=(0.5,) * 3)
    ours = faces.model_input(crop, 64, rule)
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)   # uint8, rounded
    assert ours.shape == (64, 64, 3) and ours.dtype == np.float32
    assert np.array_equal(ours[..., 0], ours[..., 1]) and np.array_equal(ours[..., 0], ours[..., 2])
    # fer's scaling: grey / 255, - 0.5, * 2; OpenCV rounds to whole grey levels (<= 0.5 / 255).
    np.testing.assert_allclose(ours[..., 0], (grey / 255.0 - 0.5) * 2.0, rtol=0, atol=1.01 / 255)


def test_input_rule_checks_its_fields_and_reads_old_runs_as_imagenet_rgb():
    with pytest.raises(ValueError, match="crop rule 'tight'"):
        faces.InputRule("tight")
    rule = faces.InputRule(faces.LANDMARKS_CROP, True, (0.5,) * 3, (0.5,) * 3)
    assert faces.InputRule.from_json(rule.to_json()) == rule
    old = faces.InputRule.from_json({})
    assert (old.crop, old.grey, old.mean, old.std) == (
        "face_box", False, faces.IMAGENET_MEAN, faces.IMAGENET_STD)


def test_landmark_box_is_the_square_on_the_landmarks_with_the_forehead_above():
    points = np.array([[10, 30], [50, 30], [30, 70], [20, 40]], np.float32)  # w 40, h 40
    x0, y0, x1, y1 = faces.landmark_box(points, forehead=0.25)
    # (10, 20, 50, 70) after raising the top by 10: 40 x 50, squared on 50 around its centre.
    assert (x0, y0, x1, y1) == pytest.approx((5.0, 20.0, 55.0, 70.0))


def test_landmarks_crop_rule_cuts_the_tight_square_its_points_map_into():
    (face,) = faces.prepare_photo(fx.astronaut(), 64, crop_rule=faces.LANDMARKS_CROP).faces
    assert face.crop.shape == (64, 64, 3) and face.landmark_source == "dlib"
    # The crop is the landmark box of the face's photo landmarks, and its points are
    # those landmarks mapped into it (both from the file points, computed here).
    x0, y0, x1, y1 = faces.landmark_box(face.file_points)
    expected, transform = faces.crop_resize(fx.astronaut(), (x0, y0, x1, y1), 64)
    np.testing.assert_array_equal(face.crop, expected)
    np.testing.assert_allclose(face.points, transform.points(face.file_points), atol=1e-3)
    # Tight: the astronaut's landmarks are taller (with the forehead) than wide, so the chin
    # is at the bottom edge and the brows a fifth (0.25 / 1.25) down from the top.
    w, h = np.ptp(face.file_points, axis=0)
    assert 1.25 * h > w
    assert face.points[:, 1].max() == pytest.approx(63.5, abs=1.0)
    assert face.points[:, 1].min() == pytest.approx(0.2 * 64 - 0.5, abs=1.0)


def test_model_input_rejects_what_is_not_a_uint8_rgb_crop():
    with pytest.raises(ValueError, match="uint8"):
        faces.model_input(np.zeros((64, 64, 3), np.float32), 64)
    with pytest.raises(ValueError, match="uint8"):
        faces.model_input(np.zeros((64, 64), np.uint8), 64)


MOVED = ("read_rgb", "square_box", "crop_resize", "CropTransform", "UnreadableImage",
         "MAX_DECODE_PIXELS", "IMAGE_EXTENSIONS")


def test_moved_helpers_are_defined_in_faces_and_nowhere_else():
    """One copy: no module of data_prep or fer_jax but data_prep/faces.py defines (def,
    class or assignment at any level) or imports under its own name one of the helpers
    that moved there from the builders."""
    import ast
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    owners = {}
    for package in ("data_prep", "fer_jax"):
        for folder, _, files in os.walk(os.path.join(repo, package)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(folder, f)
                for node in ast.walk(ast.parse(open(path).read(), path)):
                    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                        names = [node.name]
                    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                        names = [n.id for t in targets for n in ast.walk(t)
                                 if isinstance(n, ast.Name)]
                    elif isinstance(node, ast.ImportFrom):
                        names = [a.asname or a.name for a in node.names]
                    else:
                        continue
                    for name in set(names) & set(MOVED):
                        owners.setdefault(name, set()).add(os.path.relpath(path, repo))
    assert owners == {name: {os.path.join("data_prep", "faces.py")} for name in MOVED}


def test_builders_read_crop_and_list_images_through_faces(tmp_path, monkeypatch):
    """The builders call data_prep.faces at run time: what faces.read_rgb returns is what
    they crop, with faces' crop; its UnreadableImage is what they skip; its
    IMAGE_EXTENSIONS is what they list."""
    calls = []
    photo = fx.astronaut()

    def read_rgb(path, *args, **kwargs):
        calls.append(("read_rgb", path))
        if path.endswith("bad.jpg"):
            raise faces.UnreadableImage(f"{path}: not decodable (stub)")
        return photo, 0.5   # as if decoded at half size

    real_crop = faces.crop_resize

    def crop_resize(image, box, size):
        calls.append(("crop_resize", image is photo, box, size))
        return real_crop(image, box, size)

    monkeypatch.setattr(faces, "read_rgb", read_rgb)
    monkeypatch.setattr(faces, "crop_resize", crop_resize)
    settings = face_records.RecordSettings(image_size=64, margin=faces.FACE_MARGIN)
    file_box = tuple(2 * v for v in fx.FACE_BOX)   # file pixels: twice the decoded ones
    record = face_records.make_record(
        face_records.FaceTask("a", "good.jpg", 1, box=file_box), settings)
    square = faces.square_box(fx.FACE_BOX, faces.FACE_MARGIN)
    assert calls == [("read_rgb", "good.jpg"), ("crop_resize", True, square, 64)]
    want = real_crop(photo, square, 64)[0]
    got = cv2.cvtColor(cv2.imdecode(np.frombuffer(record.example["image"], np.uint8),
                                    cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(got.astype(int) - want).mean() < 3   # the same crop, JPEG-encoded
    bad = face_records.FaceTask("b", "bad.jpg", 1)
    assert face_records.make_record(bad, settings).skipped == "bad.jpg: not decodable (stub)"
    assert face_records.unreadable_files([bad]) == ["bad.jpg: not decodable (stub)"]
    for name in ("a.jpg", "b.PNG", "c.xyz", "d.txt"):
        (tmp_path / name).write_bytes(b"")
    assert face_records.list_images(str(tmp_path)) == ["a.jpg", "b.PNG"]
    monkeypatch.setattr(faces, "IMAGE_EXTENSIONS", (".xyz",))
    assert face_records.list_images(str(tmp_path)) == ["c.xyz"]


def test_faces_imports_without_tensorflow():
    """Serving reads photos with NumPy/OpenCV only: no TensorFlow start-up cost."""
    code = ("import sys, data_prep.faces; "
            "sys.exit('tensorflow' in sys.modules or 'jax' in sys.modules)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
