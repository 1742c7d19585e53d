"""TFDS builder of AffectNet (manually annotated part), from files users download by hand.

AffectNet (Mollahosseini, Hasani, Mahoor, IEEE TAC 2017; http://mohammadmahoor.com/affectnet/)
is licensed for non-commercial research. Two layouts are accepted:
(a) the original release: Manually_Annotated_Images/ + training.csv / validation.csv
    (full photos, a face box and 68 landmarks per row);
(b) the later release: train_set/ and val_set/, each images/<n>.jpg (224 px face
    crops) + annotations/<n>_exp.npy, <n>_lnd.npy.
The validation split is fer_jax's test split. None / Uncertain / Non-face rows are
dropped (and Contempt in the 7-class config), counted in build_report.json.
"""
import csv
import dataclasses
import os
from typing import Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from data_prep import codebook, landmarks
from data_prep.builders import face_records

# AffectNet expression ids -> canonical class index (docs/method.md, "Classes"); 8 None,
# 9 Uncertain, 10 Non-face are not expressions and are dropped.
RAW_TO_CANONICAL = {
    raw: codebook.EXPRESSIONS.index(name)
    for raw, name in {0: "Neutral", 1: "Happiness", 2: "Sadness", 3: "Surprise", 4: "Fear",
                      5: "Disgust", 6: "Anger", 7: "Contempt"}.items()
}
DROPPED = {8: "None", 9: "Uncertain", 10: "Non-face"}

CSV_IMAGES = "Manually_Annotated_Images"
# Where the csv files may be: the manual dir itself, the original release's
# file-list folder, or next to the images.
CSV_DIRS = ("", "Manually_Annotated_file_lists", CSV_IMAGES)
CSV_SPLITS = {"train": "training.csv", "test": "validation.csv"}
NPY_SPLITS = {"train": "train_set", "test": "val_set"}
CSV_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
               "facial_landmarks", "expression", "valence", "arousal")


@dataclasses.dataclass
class AffectnetConfig(tfds.core.BuilderConfig):
    """Number of classes and landmark source."""
    num_classes: int = 7      # 7: the paper's; 8: with Contempt
    image_size: int = 224     # stored square side, pixels
    force_dlib: bool = False  # ignore AffectNet's 68 landmarks, use dlib's


class Affectnet(face_records.FaceRecordsBuilder):
    """AffectNet manually annotated: 7 (or 8 with Contempt) expressions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        AffectnetConfig(name="7", description="7 basic expressions (the paper's)"),
        AffectnetConfig(name="8", description="7 basic expressions + Contempt", num_classes=8),
        AffectnetConfig(name="7_dlib", description="7 classes, dlib landmarks", force_dlib=True),
        AffectnetConfig(name="8_dlib", description="8 classes, dlib landmarks",
                        num_classes=8, force_dlib=True),
    ]
    DEFAULT_CONFIG_NAME = "7"
    HOMEPAGE = "http://mohammadmahoor.com/affectnet/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Request AffectNet from its authors (http://mohammadmahoor.com/affectnet/), then
put ONE of the two releases in --manual_dir=DIR:
 (a) original release:
  DIR/{CSV_IMAGES}/<subDirectory_filePath>    e.g. 689/737db2483489148d783ef278f43f486c0a97e140fc4b6b61b84363ca.jpg
  DIR/training.csv and DIR/validation.csv      (or in DIR/Manually_Annotated_file_lists/)
      columns: {", ".join(CSV_COLUMNS)}
 (b) later release:
  DIR/train_set/images/<n>.jpg, DIR/train_set/annotations/<n>_exp.npy and <n>_lnd.npy
  DIR/val_set/images/<n>.jpg,   DIR/val_set/annotations/<n>_exp.npy and <n>_lnd.npy
"""

    @classmethod
    def missing_manual_files(cls, root: str, config: AffectnetConfig) -> List[str]:
        if _layout(root) is not None:
            return []
        where = " or ".join(os.path.join(root, d, "training.csv") for d in CSV_DIRS)
        return [
            f"(a) {os.path.join(root, CSV_IMAGES)}/ and {where} (+ validation.csv)",
            "(b) " + " and ".join(
                os.path.join(root, s, sub) + "/" for s in NPY_SPLITS.values()
                for sub in ("images", "annotations")),
        ]

    def _record_settings(self) -> face_records.RecordSettings:
        cfg = self.builder_config
        # AffectNet's own face box is the crop (no margin): "the dataset's own face crops".
        return face_records.RecordSettings(image_size=cfg.image_size, margin=0.0,
                                           force_dlib=cfg.force_dlib)

    def _label(self, raw: int, split: str) -> Optional[int]:
        """Canonical label, or None (counted as dropped) for classes not in this config."""
        if raw in DROPPED:
            reason = DROPPED[raw]
        elif raw in RAW_TO_CANONICAL:
            label = RAW_TO_CANONICAL[raw]
            if label < self.builder_config.num_classes:
                return label
            reason = "Contempt (7-class config)"
        else:
            reason = f"unknown expression id {raw}"
        dropped = self._count(split).dropped
        dropped[reason] = dropped.get(reason, 0) + 1
        return None

    def _split_tasks(self, root: str) -> Dict[str, List[face_records.FaceTask]]:
        layout = _layout(root)
        # check_manual_dir (missing_manual_files) ran first: the layout is complete.
        assert layout is not None
        if layout == "npy":
            return {split: self._npy_tasks(root, split) for split in NPY_SPLITS}
        return {split: self._csv_tasks(root, layout, split) for split in CSV_SPLITS}

    def _csv_tasks(self, root: str, csv_dir: str, split: str) -> List[face_records.FaceTask]:
        path = os.path.join(csv_dir, CSV_SPLITS[split])
        tasks = []
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            first = next(rows, None)
            # Some copies of validation.csv lack the header row: assume the standard order.
            header = list(CSV_COLUMNS)
            if first is not None and first[0].strip() == CSV_COLUMNS[0]:
                header = [h.strip() for h in first]
            elif first is not None:
                rows = _chain([first], rows)
            missing = [c for c in CSV_COLUMNS[:7] if c not in header]
            if missing:
                raise ValueError(f"{path}: columns {missing} missing; found {header}")
            col = {name: header.index(name) for name in CSV_COLUMNS[:7]}
            for line_no, row in enumerate(rows, 2):
                if not row:
                    continue
                try:
                    raw = int(float(row[col["expression"]]))
                    x, y, w, h = (float(row[col[c]]) for c in
                                  ("face_x", "face_y", "face_width", "face_height"))
                except (ValueError, IndexError):
                    raise ValueError(f"{path} line {line_no}: malformed row {row[:7]}") from None
                label = self._label(raw, split)
                if label is None:
                    continue
                rel = row[col["subDirectory_filePath"]].strip()
                box = (x, y, x + w, y + h) if w > 0 and h > 0 else None
                tasks.append(face_records.FaceTask(
                    rel, os.path.join(root, CSV_IMAGES, rel), label, box=box,
                    landmarks=_parse_landmarks(row[col["facial_landmarks"]])))
        return sorted(tasks, key=lambda t: t.key)

    def _npy_tasks(self, root: str, split: str) -> List[face_records.FaceTask]:
        folder = os.path.join(root, NPY_SPLITS[split])
        tasks = []
        for name in face_records.list_images(os.path.join(folder, "images")):
            stem = os.path.splitext(name)[0]
            ann = os.path.join(folder, "annotations", stem)
            try:
                raw = int(float(np.load(ann + "_exp.npy").item()))
            except (OSError, ValueError) as e:
                msg = f"{ann}_exp.npy: unreadable expression ({e})"
                logging.warning("Skipped %s", msg)
                self._count(split).skipped_files.append(msg)
                continue
            label = self._label(raw, split)
            if label is None:
                continue
            points = None
            try:
                points = landmarks.parse_flat(np.load(ann + "_lnd.npy"))
            except (OSError, ValueError):
                pass  # no dataset landmarks: dlib is used instead
            tasks.append(face_records.FaceTask(
                f"{NPY_SPLITS[split]}/{stem}", os.path.join(folder, "images", name), label,
                landmarks=points))
        return sorted(tasks, key=lambda t: t.key)


def _chain(*iterables):
    for it in iterables:
        yield from it


def _layout(root: str) -> Optional[str]:
    """"npy" for layout (b), the csv folder for layout (a), None if neither is complete."""
    if all(os.path.isdir(os.path.join(root, s, sub))
           for s in NPY_SPLITS.values() for sub in ("images", "annotations")):
        return "npy"
    if os.path.isdir(os.path.join(root, CSV_IMAGES)):
        for d in CSV_DIRS:
            if all(os.path.isfile(os.path.join(root, d, f)) for f in CSV_SPLITS.values()):
                return os.path.join(root, d)
    return None


def _parse_landmarks(field: str) -> Optional[np.ndarray]:
    """AffectNet's "x1;y1;x2;y2;..." (136 numbers) -> (68, 2) float32, or None."""
    try:
        return landmarks.parse_flat([float(v) for v in field.replace(",", ";").split(";") if v])
    except ValueError:
        return None
