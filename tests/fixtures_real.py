"""Small copies of RAF-DB, AffectNet and image-folder datasets, in their real layouts.

Real face pixels come from `skimage.data.astronaut()` (512x512 RGB; the face's
dlib box is about x 175-268, y 76-172); flipped, shrunk and rotated copies add
variety. Odd files (corrupt bytes, a face-less flat image, grey / CMYK / RGBA
images) check that they are counted, never fatal.
"""
import functools
import os
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

# The astronaut's face box in the 512x512 image (x0, y0, x1, y1), as a
# dataset would give it (dlib's detection, rounded).
FACE_BOX = (175.0, 76.0, 268.0, 172.0)


@functools.lru_cache(maxsize=None)
def astronaut() -> np.ndarray:
    """(512, 512, 3) uint8 RGB photo with one frontal face."""
    import skimage.data
    return np.ascontiguousarray(skimage.data.astronaut())


def variant(kind: str) -> Tuple[np.ndarray, Tuple[float, float, float, float]]:
    """(image RGB uint8, face box) of a copy of the astronaut.

    kind: "orig" (512 px), "flip" (mirrored), "small" (256 px), "rot" (rotated 8 deg).
    """
    img = astronaut()
    x0, y0, x1, y1 = FACE_BOX
    if kind == "orig":
        return img.copy(), FACE_BOX
    if kind == "flip":
        return np.ascontiguousarray(img[:, ::-1]), (512 - x1, y0, 512 - x0, y1)
    if kind == "small":
        return cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA), (x0 / 2, y0 / 2, x1 / 2, y1 / 2)
    if kind == "rot":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        m = cv2.getRotationMatrix2D((cx, cy), 8, 1.0)
        return cv2.warpAffine(img, m, (512, 512), borderMode=cv2.BORDER_REFLECT), FACE_BOX
    raise ValueError(f"variant {kind!r}; valid: orig, flip, small, rot")


def face_crop(kind: str, size: int, margin: float = 0.3) -> np.ndarray:
    """(size, size, 3) crop of `variant(kind)`: face box enlarged by `margin`, resized."""
    img, (x0, y0, x1, y1) = variant(kind)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * (1 + margin) / 2
    crop = img[int(cy - half):int(cy + half), int(cx - half):int(cx + half)]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


@functools.lru_cache(maxsize=None)
def astronaut_landmarks() -> np.ndarray:
    """(68, 2) float32 landmarks of the astronaut (as a dataset would ship them)."""
    from data_prep import landmarks
    return landmarks.predict(astronaut(), FACE_BOX)


def write_image(path: str, rgb: np.ndarray, quality: int = 95) -> str:
    """Writes RGB (or grey (H, W)) uint8 `rgb` to `path` (format from the extension)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.lower().endswith((".jpg", ".jpeg")) else []
    if not cv2.imwrite(path, data, params):
        raise OSError(f"could not write {path}")
    return path


def write_corrupt(path: str) -> str:
    """A file named like an image whose bytes are not one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a JPEG" + bytes(range(256)))
    return path


def write_cmyk_jpeg(path: str, rgb: np.ndarray) -> str:
    """A CMYK JPEG (as some photo-agency images are)."""
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rgb).convert("CMYK").save(path, "JPEG", quality=95)
    return path


def flat_image(size: int = 300) -> np.ndarray:
    """A face-less image: flat grey."""
    return np.full((size, size, 3), 128, np.uint8)


# --- RAF-DB ------------------------------------------------------------------

# (file, raw RAF-DB label, variant or odd kind). Raw 1 Surprise, 2 Fear,
# 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral.
RAFDB_ROWS = (
    ("train_00001.jpg", 4, "orig"),
    ("train_00002.jpg", 1, "flip"),
    ("train_00003.jpg", 7, "small"),
    ("train_00004.jpg", 6, "corrupt"),
    ("train_00005.jpg", 3, "flat"),
    ("test_0001.jpg", 5, "rot"),
    ("test_0002.jpg", 2, "gray"),
)


def write_rafdb(root: str) -> Dict[str, int]:
    """RAF-DB basic layout (original + aligned + boxes); returns {id: raw label}."""
    labels = []
    for name, raw, kind in RAFDB_ROWS:
        stem = name[:-4]
        labels.append(f"{name} {raw}")
        original = os.path.join(root, "basic/Image/original", name)
        aligned = os.path.join(root, "basic/Image/aligned", f"{stem}_aligned.jpg")
        if kind == "corrupt":
            write_corrupt(original)
            write_corrupt(aligned)
            box = FACE_BOX
        elif kind == "flat":
            write_image(original, flat_image())
            write_image(aligned, flat_image(100))
            box = (100.0, 100.0, 200.0, 200.0)
        else:
            img, box = variant("orig" if kind == "gray" else kind)
            if kind == "gray":
                img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
                write_image(original, img)
                write_image(aligned, cv2.resize(
                    cv2.cvtColor(face_crop("orig", 100, 0.1), cv2.COLOR_RGB2GRAY), (100, 100)))
            else:
                write_image(original, img)
                write_image(aligned, face_crop(kind, 100, 0.1))
        os.makedirs(os.path.join(root, "basic/Annotation/boundingbox"), exist_ok=True)
        with open(os.path.join(root, "basic/Annotation/boundingbox", f"{stem}_boundingbox.txt"),
                  "w") as f:
            f.write(" ".join(f"{v:.1f}" for v in box) + "\n")
    os.makedirs(os.path.join(root, "basic/EmoLabel"), exist_ok=True)
    with open(os.path.join(root, "basic/EmoLabel/list_patition_label.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    return {name[:-4]: raw for name, raw, _ in RAFDB_ROWS}


# --- AffectNet ---------------------------------------------------------------

# (raw AffectNet expression, variant). 0 Neutral, 1 Happy, 2 Sad, 3 Surprise,
# 4 Fear, 5 Disgust, 6 Anger, 7 Contempt, 8 None, 9 Uncertain, 10 Non-face.
AFFECTNET_TRAIN = ((1, "orig"), (2, "flip"), (7, "small"), (8, "orig"), (9, "flip"),
                   (10, "orig"), (6, "rot"))
AFFECTNET_VAL = ((0, "orig"), (3, "flip"), (7, "orig"))


def _affectnet_csv_row(rel: str, raw: int, box, points: Optional[np.ndarray]) -> str:
    x0, y0, x1, y1 = box
    lnd = "" if points is None else ";".join(f"{v:.2f}" for v in points.reshape(-1))
    return f"{rel},{x0:.0f},{y0:.0f},{x1 - x0:.0f},{y1 - y0:.0f},{lnd},{raw},0.1,-0.2"


def _variant_landmarks(kind: str) -> np.ndarray:
    """Dataset landmarks of a variant (same geometric transform as the image)."""
    pts = astronaut_landmarks().astype(np.float64)
    if kind == "flip":  # mirrored and renumbered: iBUG order, as datasets ship them
        from data_prep import heatmaps
        pts = heatmaps.flip_landmarks_horizontally(pts, 512)
    elif kind == "small":
        pts = (pts + 0.5) / 2 - 0.5
    elif kind == "rot":
        x0, y0, x1, y1 = FACE_BOX
        m = cv2.getRotationMatrix2D(((x0 + x1) / 2, (y0 + y1) / 2), 8, 1.0)
        pts = pts @ m[:, :2].T + m[:, 2]
    return pts.astype(np.float32)


def write_affectnet_csv(root: str, header_in_validation: bool = False) -> List[str]:
    """Layout (a): Manually_Annotated_Images/ + Manually_Annotated_file_lists/*.csv.

    Returns the image paths relative to Manually_Annotated_Images. One training
    row points at a corrupt file; validation.csv has no header row (as in
    some copies) unless `header_in_validation`.
    """
    header = ("subDirectory_filePath,face_x,face_y,face_width,face_height,"
              "facial_landmarks,expression,valence,arousal")
    rels = []
    for csv_name, rows, with_header in (("training.csv", AFFECTNET_TRAIN, True),
                                        ("validation.csv", AFFECTNET_VAL, header_in_validation)):
        lines = [header] if with_header else []
        for i, (raw, kind) in enumerate(rows):
            rel = f"{100 + i % 2}/{csv_name[:3]}_{i:03d}.jpg"
            img, box = variant(kind)
            write_image(os.path.join(root, "Manually_Annotated_Images", rel), img)
            lines.append(_affectnet_csv_row(rel, raw, box, _variant_landmarks(kind)))
            rels.append(rel)
        if csv_name == "training.csv":
            rel = "101/corrupt.jpg"
            write_corrupt(os.path.join(root, "Manually_Annotated_Images", rel))
            lines.append(_affectnet_csv_row(rel, 1, FACE_BOX, None))
        os.makedirs(os.path.join(root, "Manually_Annotated_file_lists"), exist_ok=True)
        with open(os.path.join(root, "Manually_Annotated_file_lists", csv_name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return rels


def write_affectnet_npy(root: str, size: int = 128) -> None:
    """Layout (b): train_set/ and val_set/ with images/<n>.jpg and annotations/<n>_*.npy.

    Images are face crops of `size` px; landmarks in crop pixels; the
    expression is stored as a numpy string, as in the release.
    """
    for folder, rows in (("train_set", AFFECTNET_TRAIN), ("val_set", AFFECTNET_VAL)):
        for i, (raw, kind) in enumerate(rows):
            img, box = variant(kind)
            x0, y0, x1, y1 = box
            side = max(x1 - x0, y1 - y0) * 1.2
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            ox, oy = cx - side / 2, cy - side / 2
            m = np.array([[size / side, 0, -ox * size / side], [0, size / side, -oy * size / side]])
            crop = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA)
            write_image(os.path.join(root, folder, "images", f"{i}.jpg"), crop)
            pts = _variant_landmarks(kind).astype(np.float64) @ m[:, :2].T + m[:, 2]
            ann = os.path.join(root, folder, "annotations")
            os.makedirs(ann, exist_ok=True)
            np.save(os.path.join(ann, f"{i}_exp.npy"), np.array(str(raw)))
            np.save(os.path.join(ann, f"{i}_lnd.npy"), pts.reshape(-1).astype(np.float64))
            np.save(os.path.join(ann, f"{i}_val.npy"), np.array("0.1"))
            np.save(os.path.join(ann, f"{i}_aro.npy"), np.array("-0.2"))


# --- Image folders -----------------------------------------------------------

# class folder name (forgiving spellings) -> files (variant or odd kind).
FOLDER_CLASSES = {
    "happy": ("orig", "flip", "small"),
    "Angry": ("rot", "cmyk"),
    "3_surprised": ("flip", "rgba"),
    "SADNESS": ("small", "flat", "corrupt"),
    "neutral": ("orig",),
    "contempt": ("flip",),
}


def folder_kinds() -> Dict[str, str]:
    """{"<class folder>/<file stem>": kind} of the files write_image_folder writes."""
    return {f"{cls}/{cls.lower()}_{i:02d}": kind
            for cls, kinds in FOLDER_CLASSES.items() for i, kind in enumerate(kinds)}


def write_image_folder(root: str, split_level: bool = False) -> int:
    """ROOT/<class>/<image> (or ROOT/train|test/<class>/<image>); returns the file count.

    Images are whole photos (512 px), shrunk copies, grey-level-free flat
    images, CMYK JPEGs, RGBA PNGs and one corrupt file.
    """
    count = 0
    for cls, kinds in FOLDER_CLASSES.items():
        for i, kind in enumerate(kinds):
            split = ("train" if i % 2 == 0 else "test") if split_level else ""
            folder = os.path.join(root, split, cls)
            base = os.path.join(folder, f"{cls.lower()}_{i:02d}")
            if kind == "corrupt":
                write_corrupt(base + ".jpg")
            elif kind == "flat":
                write_image(base + ".png", flat_image(200))
            elif kind == "cmyk":
                write_cmyk_jpeg(base + ".JPG", variant("orig")[0])
            elif kind == "rgba":
                img = variant(kind="flip")[0]
                rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 200, np.uint8)], -1)
                os.makedirs(folder, exist_ok=True)
                cv2.imwrite(base + ".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
            else:
                write_image(base + ".jpg", variant(kind)[0])
            count += 1
    with open(os.path.join(root, "README.txt"), "w") as f:  # stray files are ignored
        f.write("not an image folder\n")
    return count
