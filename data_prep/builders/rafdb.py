"""TFDS builder of RAF-DB (basic emotion set), from the files users download by hand.

RAF-DB (Li, Deng, Du, CVPR 2017; http://www.whdeng.cn/RAF/model1.html) is
licensed for non-commercial research; the authors send a download link on request.
Labels 1..7 of `list_patition_label.txt` are mapped to fer_jax's canonical order.
"""
import dataclasses
import os
from typing import Callable, Dict, List, Tuple

from absl import logging
import tensorflow_datasets as tfds

from data_prep import codebook, faces
from data_prep.builders import face_records

# RAF-DB basic ids (1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness,
# 6 Anger, 7 Neutral) -> canonical class index (docs/method.md, "Classes").
RAW_TO_CANONICAL = {
    raw: codebook.EXPRESSIONS.index(name)
    for raw, name in {1: "Surprise", 2: "Fear", 3: "Disgust", 4: "Happiness",
                      5: "Sadness", 6: "Anger", 7: "Neutral"}.items()
}

LABEL_FILE = "basic/EmoLabel/list_patition_label.txt"
ORIGINAL_DIR = "basic/Image/original"
ALIGNED_DIR = "basic/Image/aligned"
BOX_DIR = "basic/Annotation/boundingbox"


@dataclasses.dataclass
class RafdbConfig(tfds.core.BuilderConfig):
    """Which RAF-DB images, and how they are cropped."""
    aligned: bool = False   # use basic/Image/aligned/<id>_aligned.jpg (100x100) as they are
    image_size: int = 224   # stored square side, pixels
    margin: float = faces.FACE_MARGIN  # original images: face box enlarged by 30% (15% each side)


class Rafdb(face_records.FaceRecordsBuilder):
    """RAF-DB basic: 7 expressions, train 12271 / test 3068 face crops."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        RafdbConfig(name="original", description=(
            "basic/Image/original cropped to the face box enlarged by 30%, 224 px (the paper's)")),
        RafdbConfig(name="aligned", description="basic/Image/aligned, 100x100 as shipped",
                    aligned=True, image_size=100, margin=0.0),
    ]
    DEFAULT_CONFIG_NAME = "original"
    HOMEPAGE = "http://www.whdeng.cn/RAF/model1.html"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Ask the RAF-DB authors for access (http://www.whdeng.cn/RAF/model1.html), then
extract the "basic" part so that --manual_dir=DIR holds:
  DIR/{LABEL_FILE}        lines "train_00001.jpg 5", "test_0001.jpg 1"
  DIR/{ORIGINAL_DIR}/train_00001.jpg ...        (config "original", the default)
  DIR/{BOX_DIR}/train_00001_boundingbox.txt ... (one line "x0 y0 x1 y1"; config "original")
  DIR/{ALIGNED_DIR}/train_00001_aligned.jpg ...  (config "aligned" only)
"""

    def num_classes(self) -> int:
        return codebook.NUM_BASIC  # the basic set has the 7 basic expressions only

    @classmethod
    def missing_manual_files(cls, root: str, config: RafdbConfig) -> List[str]:
        needed: List[Tuple[str, Callable[[str], bool]]] = [(LABEL_FILE, os.path.isfile)]
        if config.aligned:
            needed.append((ALIGNED_DIR + "/", os.path.isdir))
        else:
            needed += [(ORIGINAL_DIR + "/", os.path.isdir), (BOX_DIR + "/", os.path.isdir)]
        return [f"{os.path.join(root, rel)}" for rel, exists in needed
                if not exists(os.path.join(root, rel))]

    def _record_settings(self) -> face_records.RecordSettings:
        cfg = self.builder_config
        return face_records.RecordSettings(image_size=cfg.image_size, margin=cfg.margin)

    def _split_tasks(self, root: str) -> Dict[str, List[face_records.FaceTask]]:
        cfg = self.builder_config
        splits: Dict[str, List[face_records.FaceTask]] = {"train": [], "test": []}
        for line_no, (name, raw) in enumerate(_read_label_file(os.path.join(root, LABEL_FILE)), 1):
            split = name.split("_")[0]
            if split not in splits or raw not in RAW_TO_CANONICAL:
                raise ValueError(
                    f"{os.path.join(root, LABEL_FILE)} line {line_no}: {name!r} {raw!r}; "
                    "expected 'train_NNNNN.jpg' or 'test_NNNN.jpg' and a label 1..7")
            stem = os.path.splitext(name)[0]
            label = RAW_TO_CANONICAL[raw]
            if cfg.aligned:
                path = os.path.join(root, ALIGNED_DIR, f"{stem}_aligned.jpg")
                splits[split].append(face_records.FaceTask(stem, path, label))
                continue
            path = os.path.join(root, ORIGINAL_DIR, name)
            box_file = os.path.join(root, BOX_DIR, f"{stem}_boundingbox.txt")
            box = _read_box(box_file)
            if box is None:  # without its box the crop would not be the paper's
                reason = f"{box_file}: missing or malformed box, {name} skipped"
                logging.warning("Skipped %s", reason)
                self._count(split).skipped_files.append(reason)
                continue
            splits[split].append(face_records.FaceTask(stem, path, label, box=box))
        return {split: sorted(tasks, key=lambda t: t.key) for split, tasks in splits.items()}


def _read_label_file(path: str) -> List[tuple]:
    """[(file name, raw label int)] from list_patition_label.txt."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{path}: malformed line {line.strip()!r}; "
                                 "expected 'train_00001.jpg 5'")
            rows.append((parts[0], int(parts[1])))
    return rows


def _read_box(path: str):
    """(x0, y0, x1, y1) from a RAF-DB boundingbox file, or None if missing/malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            values = [float(v) for v in f.read().split()[:4]]
    except (OSError, ValueError):
        return None
    if len(values) != 4 or values[2] <= values[0] or values[3] <= values[1]:
        return None
    return tuple(values)
