"""Photo -> face box -> square crop -> model input: the one preprocessing of
training (the TFDS builders) and serving (fer_jax.predict), in NumPy/OpenCV.

- `read_rgb`: any readable image file -> (H, W, 3) uint8 RGB (grey, CMYK, RGBA,
  16-bit become 8-bit RGB); huge JPEGs are decoded at 1/2, 1/4 or 1/8 size so
  memory stays bounded.
- `find_faces`: every dlib HOG face of a photo, largest first.
- `square_box`, `crop_resize`, `face_crop`: the builders' square crop (box made
  square, enlarged by FACE_MARGIN, cut out with black outside the photo, resized)
  and the `CropTransform` mapping photo coordinates (landmarks, boxes) into it.
  `landmark_box`: the other crop rule, a tight square on the 68 landmarks (the
  FER2013 model's input; `InputRule.crop`).
- `InputRule`, `normalise`, `model_input`: a stored crop -> the float32 image the
  model sees: by default ImageNet-normalised RGB, numerically as
  `fer_jax.input_pipeline` makes it in evaluation (same resize, same constants),
  without TensorFlow; or grey and scaled to [-1, 1] (the FER2013 mini-Xception).
"""
import dataclasses
import io
import warnings
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from data_prep import landmarks

Box = landmarks.Box  # (x0, y0, x1, y1) pixel edges, floats

# Decoded images are kept below this many pixels (~48 MB as RGB) by decoding
# large JPEGs at reduced size; face crops need far fewer pixels than that.
MAX_DECODE_PIXELS = 16_000_000
_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                  4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# File name endings taken for images when listing folders (compared in lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp",
                    ".gif", ".pgm", ".ppm", ".pbm")
# The face box is made square and enlarged by this fraction (15% on each side):
# RAF-DB's published crops, reused for faces detected in photos (image_folder, predict).
FACE_MARGIN = 0.3
# An enlarged face square covering at least this fraction of a photo means the
# photo already is a face crop: keep all of it rather than pad past its borders.
ALREADY_CROPPED = 0.5
# torchvision's ImageNet statistics, per RGB channel, for images in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# BT.601 luma weights of R, G, B: OpenCV's COLOR_RGB2GRAY, which `fer` (and FER2013's
# greyscale faces) use; they sum to 1, so a grey image (equal channels) stays itself.
LUMA = (0.299, 0.587, 0.114)
# Crop rules (InputRule.crop): the builders' crop, the detected face box made square and
# enlarged by FACE_MARGIN; or a tight square on the 68 landmarks, as FER2013's faces
# (face edge to edge, forehead above the brows, chin at the bottom).
FACE_BOX_CROP = "face_box"
LANDMARKS_CROP = "landmarks"
CROP_RULES = (FACE_BOX_CROP, LANDMARKS_CROP)
# The landmarks' box (brows to chin, jaw edge to jaw edge) gets this fraction of its
# height above it for the forehead, which the 68 points do not reach; then it is made
# square on its longer side.
LANDMARK_FOREHEAD = 0.25
# Landmarks for the tight crop are found on the builders' crop at this side at least
# (dlib's predictor is imprecise on a 64 px face), then the crop is cut from the photo.
LANDMARK_SEARCH_SIDE = 160


class UnreadableImage(Exception):
    """The file is missing, empty, corrupt or not an image."""


# --- Reading -----------------------------------------------------------------

def _header_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from the file header (nothing decoded), or None."""
    try:
        from PIL import Image
    except ImportError:  # PIL is optional: without it huge images decode at full size
        return None
    limit = Image.MAX_IMAGE_PIXELS
    try:
        # The pixel limit guards against decompression bombs; we only read the
        # header here and bound the decode ourselves.
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Exception:  # noqa: BLE001 - any header PIL cannot parse: let cv2 try
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _decode_with_pil(data: bytes, reduce: int) -> Optional[np.ndarray]:
    """RGB uint8 via PIL (formats cv2 lacks, e.g. GIF, odd TIFFs), or None."""
    try:
        from PIL import Image
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                if reduce > 1:
                    im.draft("RGB", (im.size[0] // reduce, im.size[1] // reduce))
                return np.asarray(im.convert("RGB"))
    except Exception:  # noqa: BLE001 - unreadable by PIL too: the caller reports it
        return None


def read_rgb(path: str, max_pixels: int = MAX_DECODE_PIXELS) -> Tuple[np.ndarray, float]:
    """Decodes an image file as RGB.

    Args:
      path: image file (JPEG, PNG, BMP, TIFF, WebP, GIF, ...), any channel layout.
      max_pixels: JPEGs larger than this are decoded at 1/2, 1/4 or 1/8 size.
    Returns:
      (image, scale): image (H, W, 3) uint8 RGB; scale = decoded size / file
      size (1.0 unless reduced), to map coordinates given for the file.
    Raises:
      UnreadableImage: missing, empty, corrupt or not an image (message names the file).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UnreadableImage(f"{path}: {e.strerror or e}") from None
    if not data:
        raise UnreadableImage(f"{path}: empty file")
    size = _header_size(data)
    reduce = 1
    if size is not None:
        while size[0] * size[1] > max_pixels * reduce * reduce and reduce < 8:
            reduce *= 2
    buf = np.frombuffer(data, np.uint8)
    # IMREAD_COLOR turns grey, CMYK, RGBA and 16-bit images into 8-bit BGR.
    image = cv2.imdecode(buf, _REDUCED_FLAGS[reduce])
    if image is not None:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    else:
        image = _decode_with_pil(data, reduce)
    if image is None or image.ndim != 3 or min(image.shape[:2]) < 1:
        raise UnreadableImage(f"{path}: not a decodable image ({len(data)} bytes)")
    scale = 1.0
    if size is not None:
        # max over sides: robust to an EXIF rotation swapping width and height.
        scale = max(image.shape[:2]) / max(size)
    return np.ascontiguousarray(image), scale


# --- Faces -------------------------------------------------------------------

def find_faces(rgb: np.ndarray, max_faces: Optional[int] = None) -> List[Box]:
    """Every face dlib's HOG detector finds in a photo, largest first.

    The photo is searched at most landmarks.DETECT_MAX_SIDE px on its longer
    side (faces from ~60-80 px there), once more upsampled (from ~40 px) only when
    that finds nothing, and last as a face crop at landmarks.DETECT_CROP_SIDE px
    (small crops such as FER2013's 48 px faces). So faces under ~60 px are missed
    in a photo that also holds a larger one: the price of one pass (~45 ms on a
    1024 px photo) instead of two (~4x that).

    Args:
      rgb: (H, W, 3) uint8 RGB (or (H, W) grey) photo, any size.
      max_faces: keep at most this many (the largest); None: all.
    Returns:
      [(x0, y0, x1, y1)] float boxes in `rgb` pixels, by decreasing area, equal
      areas left to right, then top to bottom (the same order on every run).
    """
    if max_faces is not None and max_faces < 1:
        raise ValueError(f"max_faces={max_faces}; expected None or >= 1")
    boxes = landmarks.detect_faces_in_photo(rgb) or landmarks.detect_faces_in_crop(rgb)
    # Sorted again: mapping boxes back from the search size must not reorder ties.
    return landmarks.largest_first(boxes)[:max_faces]


# --- Geometry ----------------------------------------------------------------

def square_box(box: Box, margin: float = 0.0) -> Box:
    """The square around `box`'s centre, side = longer side * (1 + margin).

    margin FACE_MARGIN (0.3) is RAF-DB's "box enlarged by 30%" (15% on each side).
    """
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"face box {box} is empty; expected x0 < x1 and y0 < y1")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (1 + margin) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def landmark_box(points: np.ndarray, forehead: float = LANDMARK_FOREHEAD) -> Box:
    """The tight square on a face's 68 landmarks (the LANDMARKS_CROP rule).

    Args:
      points: (68, 2) float (x, y) pixel landmarks of one face.
      forehead: fraction of the landmarks' height added above them.
    Returns:
      (x0, y0, x1, y1) square box in the same pixels: the landmarks' extent, raised
      by `forehead` x its height at the top, made square on its longer side.
    """
    pts = np.asarray(points, np.float64)
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    return square_box((float(x0), float(y0 - forehead * (y1 - y0)), float(x1), float(y1)))


@dataclasses.dataclass(frozen=True)
class CropTransform:
    """Maps file pixel coordinates (pixel centres at integers) into the crop."""
    origin: Tuple[float, float]  # top-left of the crop in file pixels
    scale: Tuple[float, float]   # crop pixels per file pixel, (x, y)

    def points(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) file pixel (x, y) -> (N, 2) float32 crop pixel (x, y)."""
        pts = np.asarray(pts, np.float64)
        out = (pts - np.asarray(self.origin) + 0.5) * np.asarray(self.scale) - 0.5
        return out.astype(np.float32)

    def file_points(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) crop pixel (x, y) -> (N, 2) float32 file pixel (x, y): `points` inverted."""
        pts = np.asarray(pts, np.float64)
        out = (pts + 0.5) / np.asarray(self.scale) - 0.5 + np.asarray(self.origin)
        return out.astype(np.float32)

    def box(self, box: Box) -> Box:
        """(x0, y0, x1, y1) file pixel edges -> crop pixel edges."""
        (x0, x1), (y0, y1) = (
            ((box[0] - self.origin[0]) * self.scale[0], (box[2] - self.origin[0]) * self.scale[0]),
            ((box[1] - self.origin[1]) * self.scale[1], (box[3] - self.origin[1]) * self.scale[1]))
        return (x0, y0, x1, y1)


def crop_resize(image: np.ndarray, box: Optional[Box], size: int
                ) -> Tuple[np.ndarray, CropTransform]:
    """Cuts `box` out of `image` (black where it leaves the image), resized to size x size.

    Args:
      image: (H, W, 3) uint8.
      box: (x0, y0, x1, y1) pixel edges, rounded to whole pixels, or None for
        the whole image (then resized to a square, as torchvision's
        Resize((S, S)) would).
      size: output side in pixels.
    Returns:
      (crop (size, size, 3) uint8, transform from `image` to crop pixels).
    """
    h, w = image.shape[:2]
    if box is None:
        x0, y0, x1, y1 = 0, 0, w, h
    else:
        x0, y0 = int(np.floor(box[0] + 0.5)), int(np.floor(box[1] + 0.5))
        x1, y1 = int(np.floor(box[2] + 0.5)), int(np.floor(box[3] + 0.5))
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    # Copy only the part inside the image, then pad: memory ~ the crop, not the image.
    inner = image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    pad = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    if inner.size == 0:
        region = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    elif any(pad):
        region = cv2.copyMakeBorder(inner, *pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    else:
        region = inner
    rh, rw = region.shape[:2]
    # INTER_AREA averages when shrinking (no aliasing); it degenerates to
    # nearest-neighbour when enlarging, where INTER_LINEAR is the better choice.
    shrink = rw > size or rh > size
    crop = cv2.resize(region, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop), CropTransform((float(x0), float(y0)),
                                                     (size / rw, size / rh))


def face_crop(rgb: np.ndarray, box: Optional[Box], size: int, margin: float = FACE_MARGIN,
              *, keep_face_crops_whole: bool = True) -> Tuple[np.ndarray, CropTransform]:
    """The square crop the builders store for a face in a photo.

    Args:
      rgb: (H, W, 3) uint8 RGB photo.
      box: (x0, y0, x1, y1) face box in `rgb` pixels (e.g. from `find_faces`,
        or a dataset's box), or None: the whole photo.
      size: side of the crop in pixels.
      margin: the box is made square (longer side) and enlarged by this fraction.
      keep_face_crops_whole: when the enlarged square covers at least
        ALREADY_CROPPED of the photo, the photo already is a face crop: the
        whole photo is kept (resized to a square, as image_folder stores it)
        instead of being padded with black past its borders. Pass False where
        the crop must be the box's (a dataset's own box; each of several
        faces of one photo).
    Returns:
      (crop (size, size, 3) uint8, CropTransform from `rgb` to crop pixels).
    """
    if box is None:
        return crop_resize(rgb, None, size)
    square = square_box(box, margin)
    side = square[2] - square[0]
    if keep_face_crops_whole and side * side >= ALREADY_CROPPED * rgb.shape[0] * rgb.shape[1]:
        return crop_resize(rgb, None, size)
    return crop_resize(rgb, square, size)


# --- Model input -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InputRule:
    """How a face in a photo becomes a model's input (a run's run.json "input").

    crop: CROP_RULES: FACE_BOX_CROP (the builders': every model trained here) or
      LANDMARKS_CROP (tight on the landmarks: the FER2013 mini-Xception);
    grey: the crop is made grey (LUMA), the three channels equal;
    mean, std: per-channel normalisation of the [0, 1] image: ImageNet's, or 0.5
      and 0.5 for [-1, 1].
    """
    crop: str = FACE_BOX_CROP
    grey: bool = False
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD

    def __post_init__(self):
        if self.crop not in CROP_RULES:
            raise ValueError(f"crop rule {self.crop!r}; valid: {list(CROP_RULES)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean {self.mean}, std {self.std}: expected 3 values each, "
                             "std > 0")

    def to_json(self) -> dict:
        return {"crop": self.crop, "grey": self.grey, "mean": list(self.mean),
                "std": list(self.std)}

    @classmethod
    def from_json(cls, info: dict) -> "InputRule":
        """Inverse of to_json; missing keys take the defaults (runs made before them)."""
        default = cls()
        return cls(str(info.get("crop", default.crop)), bool(info.get("grey", default.grey)),
                   tuple(float(v) for v in info.get("mean", default.mean)),
                   tuple(float(v) for v in info.get("std", default.std)))


def normalise(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Per-channel normalisation, by default ImageNet's, as the training and evaluation
    pipelines apply it.

    Args:
      image: (..., H, W, 3) uint8 in [0, 255], or float in [0, 1].
      mean, std: per channel, for x in [0, 1].
    Returns:
      float32 (..., H, W, 3): (x - mean) / std per channel, with x in [0, 1]; about
      [-2.1, 2.7] for ImageNet's.
    """
    x = _unit_float(image)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def grey(image: np.ndarray) -> np.ndarray:
    """(..., 3) float RGB -> (..., 3) float32 grey (LUMA), the value in all three channels."""
    y = np.asarray(image, np.float32) @ np.asarray(LUMA, np.float32)
    return np.repeat(y[..., None], 3, axis=-1)


def _unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]; a float image is only cast to float32."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        # Multiply by float32(1/255), as tf.image.convert_image_dtype does (a
        # division can differ from it in the last bit).
        return image.astype(np.float32) * np.float32(1.0 / 255.0)
    return image.astype(np.float32)


def _antialiased_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 rows of TF's antialiased bilinear ("triangle") resize.

    The weights of tensorflow/core/kernels/image/scale_and_translate_op.cc
    (ComputeSpansCore), computed in float32 as there: output pixel i samples
    the input at (i + 0.5) / scale; the triangle kernel is widened by
    1 / scale when shrinking (the antialiasing low-pass), not when enlarging;
    taps are clipped to the image and renormalised to sum 1.
    """
    f = np.float32
    scale = f(n_out) / f(n_in)
    inv_scale = f(1.0 / float(scale))
    kernel_scale = max(inv_scale, f(1.0))
    centre = (np.arange(n_out, dtype=f) + f(0.5)) * inv_scale
    source = np.arange(n_in, dtype=f) + f(0.5)
    weights = np.maximum(f(0.0), f(1.0) - np.abs(
        (source[None, :] - centre[:, None]) * f(1.0 / float(kernel_scale))))
    # The op only visits taps in [ceil(c - r - 0.5), floor(c + r - 0.5)]: outside
    # them a weight that float rounding leaves barely above 0 must not count.
    first = np.ceil(centre - kernel_scale - f(0.5))[:, None]
    last = np.floor(centre + kernel_scale - f(0.5))[:, None]
    taps = np.arange(n_in)[None, :]
    weights = np.where((taps >= first) & (taps <= last), weights, f(0.0))
    return (weights * (f(1.0) / weights.sum(1, dtype=f))[:, None]).astype(f)


def resize_antialiased(image: np.ndarray, size: int) -> np.ndarray:
    """tf.image.resize(image, (size, size), antialias=True) (bilinear) in NumPy.

    Args:
      image: (H, W, C) float in [0, 1].
      size: output side.
    Returns:
      float32 (size, size, C); equal to TensorFlow's up to float32 rounding
      (max abs difference ~1e-7 on [0, 1] images).
    """
    image = np.asarray(image, np.float32)
    h, w, c = image.shape
    rows, cols = _antialiased_weights(h, size), _antialiased_weights(w, size)
    out = (rows @ image.reshape(h, w * c)).reshape(size, w, c)  # along y
    return np.einsum("ow,ywc->yoc", cols, out).astype(np.float32)  # along x


def unit_image(crop: np.ndarray, image_size: Optional[int] = None) -> np.ndarray:
    """A stored uint8 crop (or map) as float32 in [0, 1] at the model's side.

    Args:
      crop: (H, W, C) uint8.
      image_size: output side; None or H = W = image_size: no resize, else
        `resize_antialiased` (tf.image.resize(antialias=True)) then clipped to [0, 1].
    Returns:
      float32 (image_size, image_size, C) in [0, 1]: what training augments and
      evaluation normalises.
    """
    x = _unit_float(crop)
    if image_size is None or x.shape[:2] == (image_size, image_size):
        return x
    return np.clip(resize_antialiased(x, image_size), 0.0, 1.0)


def model_input(crop: np.ndarray, image_size: int, rule: InputRule = InputRule()
                ) -> np.ndarray:
    """A stored face crop -> the model's input, as evaluation makes it from a record.

    fer_jax.input_pipeline reads a record's uint8 image as float in [0, 1],
    resizes it with tf.image.resize(antialias=True) when its side differs from
    config.dataset.image_size, clips to [0, 1] and normalises: the same here,
    with the grey conversion of `rule` (after the resize) before normalising.

    Args:
      crop: (H, W, 3) uint8 RGB, e.g. `face_crop(...)[0]` at the dataset's size.
      image_size: the model's input side (config.dataset.image_size).
      rule: the model's InputRule (its crop rule made `crop`; colour, normalisation).
    Returns:
      float32 (image_size, image_size, 3), normalised by `rule`. With the default
      rule and a crop already image_size square: exactly `normalise(crop)`, bit for
      bit what evaluation computes.
    """
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[-1] != 3:
        raise ValueError(f"crop {crop.dtype} {crop.shape}; expected uint8 (H, W, 3) RGB")
    x = unit_image(crop, image_size)
    if rule.grey:
        x = grey(x)
    return normalise(x, rule.mean, rule.std)


# --- Photos for inference ----------------------------------------------------

@dataclasses.dataclass
class PreparedFace:
    """One face of a photo, cropped (by a crop rule) and landmarked as the builders do."""
    index: int                      # 0 = the largest face
    box: Optional[Box]              # detected face box, file pixels; None: the whole photo
    crop: np.ndarray                # (size, size, 3) uint8, the crop rule's crop
    points: np.ndarray              # (68, 2) float32 landmarks in crop pixels (zeros if failed)
    landmark_source: str            # "dlib", "fallback_box" or "failed"
    file_points: np.ndarray         # (68, 2) float32 the same landmarks in file pixels


@dataclasses.dataclass
class PreparedPhoto:
    """A photo's faces, or why there are none (status "ok", "no_face" or "unreadable")."""
    path: str
    status: str
    reason: str = ""
    shape: Optional[Tuple[int, int]] = None      # decoded (H, W)
    scale: float = 1.0                           # decoded size / file size
    faces: List[PreparedFace] = dataclasses.field(default_factory=list)
    preview: Optional[np.ndarray] = None         # uint8 RGB copy, longer side <= preview_side


def prepare_photo(source, size: int, max_faces: Optional[int] = None, detect: bool = True,
                  preview_side: int = 0, crop_rule: str = FACE_BOX_CROP) -> PreparedPhoto:
    """Read a photo, find its faces (largest first), crop and landmark each one.

    Args:
      source: a file path, or an (H, W, 3) / (H, W) uint8 array (named "<array>").
      size: crop side in pixels (the records' stored size).
      max_faces: keep at most this many faces (the largest).
      detect: False: the photo already is a face crop; it is used whole.
      preview_side: > 0: keep a copy of the photo, shrunk to this longer side at
        most, for pictures (so the photo need not be decoded twice).
      crop_rule: CROP_RULES. FACE_BOX_CROP: the builders' crop. LANDMARKS_CROP: the
        landmarks are found on the builders' crop (at LANDMARK_SEARCH_SIDE px at
        least), then the crop is `landmark_box` of them, cut from the photo; a face
        without landmarks, or a photo used whole, keeps the builders' crop.
    Returns:
      PreparedPhoto. Never raises for bad input: an unreadable file gives
      status "unreadable" with the reason, a photo without a face "no_face".
    """
    path = source if isinstance(source, str) else "<array>"
    try:
        if isinstance(source, str):
            rgb, scale = read_rgb(source)
        else:
            rgb, scale = _as_rgb(source), 1.0
    except UnreadableImage as e:
        return PreparedPhoto(path, "unreadable", str(e))
    photo = PreparedPhoto(path, "ok", shape=rgb.shape[:2], scale=scale)
    if preview_side > 0:
        shrink = preview_side / max(rgb.shape[:2])
        photo.preview = rgb if shrink >= 1 else cv2.resize(
            rgb, (max(1, round(rgb.shape[1] * shrink)), max(1, round(rgb.shape[0] * shrink))),
            interpolation=cv2.INTER_AREA)
    boxes: Sequence[Optional[Box]] = find_faces(rgb, max_faces) if detect else [None]
    if not boxes:
        photo.status, photo.reason = "no_face", "no face found (try --no_detect for face crops)"
        return photo
    if crop_rule not in CROP_RULES:
        raise ValueError(f"crop_rule={crop_rule!r}; valid: {list(CROP_RULES)}")
    tight = crop_rule == LANDMARKS_CROP
    for i, box in enumerate(boxes):
        # One face: a photo that already is a face crop is kept whole, as the
        # builders do; several faces: each is cut out by its own box.
        whole = len(boxes) == 1
        side = max(size, LANDMARK_SEARCH_SIDE) if tight else size
        crop, transform = face_crop(rgb, box, side, keep_face_crops_whole=whole)
        detected = None if box is None else transform.box(box)
        marks = landmarks.locate(crop, detected_box=detected)
        points = marks.points
        photo_points = transform.file_points(points)   # decoded-photo pixels
        if tight:
            if box is not None and marks.source != "failed":
                crop, transform = crop_resize(rgb, landmark_box(photo_points), size)
            elif side != size:
                crop, transform = face_crop(rgb, box, size, keep_face_crops_whole=whole)
            if marks.source != "failed":   # failed points stay zeros
                points = transform.points(photo_points)
        # Pixel centres: decoded x = (file x + 0.5) * scale - 0.5.
        file_points = (photo_points + 0.5) / np.float32(scale) - 0.5
        file_box: Optional[Box] = None
        if box is not None:
            x0, y0, x1, y1 = box
            file_box = (x0 / scale, y0 / scale, x1 / scale, y1 / scale)
        photo.faces.append(PreparedFace(i, file_box, crop, points, marks.source, file_points))
    return photo


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """An in-memory image (grey, RGB or RGBA; uint8, uint16 or float in [0, 1]) -> uint8 RGB."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) < 1:
        raise UnreadableImage(f"<array>: shape {image.shape}; expected (H, W), (H, W, 3) or "
                              "(H, W, 4)")
    image = image[..., :3]
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(image)
