"""TFDS builder of any facial-expression dataset stored as folders of images.

For FER2013 exported as images, CK+, JAFFE, KDEF, users' own photos, ...:
  ROOT/<class>/*.jpg               (no split level: a deterministic 80/20 train/test split)
  ROOT/<split>/<class>/*.jpg       (split folders: train, test, val/validation)
with --manual_dir=ROOT. Class folder names are forgiving ("happy", "Happiness",
"3_surprised", "ANGRY" ...). Each image's largest dlib face (enlarged by 30%) is
cropped; images that already are face crops, or where no face is found, are kept whole.
"""
import dataclasses
import hashlib
import os
import re
from typing import Dict, List, Optional, Tuple

from absl import logging
import tensorflow_datasets as tfds

from data_prep import codebook, faces
from data_prep.builders import face_records

# Folder-name spellings (lower case, letters only) -> canonical expression.
CLASS_ALIASES = {
    "neutral": "Neutral", "neutrality": "Neutral", "calm": "Neutral",
    "happy": "Happiness", "happiness": "Happiness", "joy": "Happiness",
    "surprise": "Surprise", "surprised": "Surprise",
    "fear": "Fear", "fearful": "Fear", "afraid": "Fear", "scared": "Fear",
    "anger": "Anger", "angry": "Anger",
    "disgust": "Disgust", "disgusted": "Disgust",
    "sad": "Sadness", "sadness": "Sadness",
    "contempt": "Contempt", "contemptuous": "Contempt",
}
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "test": "test", "testing": "test", "privatetest": "test",
    "val": "validation", "valid": "validation", "validation": "validation",
    "publictest": "validation", "dev": "validation",
}
TRAIN_PERCENT = 80  # no split level: this share of each class goes to train


def canonical_class(folder: str) -> Optional[str]:
    """Canonical expression of a class folder name ("3_Happy" -> "Happiness"), or None."""
    return CLASS_ALIASES.get(re.sub(r"[^a-z]", "", folder.lower()))


def canonical_split(folder: str) -> Optional[str]:
    """"train", "test" or "validation" for a split folder name, or None."""
    return SPLIT_ALIASES.get(re.sub(r"[^a-z]", "", folder.lower()))


def hashed_split(rel_path: str) -> str:
    """"train" or "test" from a hash of the file's path relative to ROOT (stable, ~80/20)."""
    digest = hashlib.sha256(rel_path.replace(os.sep, "/").encode("utf-8")).digest()
    return "train" if int.from_bytes(digest[:8], "big") % 100 < TRAIN_PERCENT else "test"


def _subdirs(folder: str) -> List[str]:
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


@dataclasses.dataclass
class ImageFolderConfig(tfds.core.BuilderConfig):
    """Stored size and classes."""
    image_size: int = 224  # stored square side, pixels
    num_classes: int = 7   # 7 basic; 8 adds Contempt (7: contempt folders are dropped)
    margin: float = faces.FACE_MARGIN  # detected face box enlarged by 30%, as RAF-DB's crops


class ImageFolder(face_records.FaceRecordsBuilder):
    """Facial expressions from ROOT/[<split>/]<class>/<image> folders."""

    name = "image_folder"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        ImageFolderConfig(name="224", description="224 px, 7 classes"),
        ImageFolderConfig(name="112", description="112 px, 7 classes", image_size=112),
        ImageFolderConfig(name="224_8", description="224 px, 8 classes (with Contempt)",
                          num_classes=8),
        ImageFolderConfig(name="112_8", description="112 px, 8 classes (with Contempt)",
                          image_size=112, num_classes=8),
    ]
    DEFAULT_CONFIG_NAME = "224"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Point --manual_dir at the folder ROOT holding one sub-folder per expression:
  ROOT/<class>/<image>            e.g. ROOT/happy/0001.jpg, ROOT/Angry/x.png
or, with your own train/test split:
  ROOT/<split>/<class>/<image>    split: train | test | val (validation)
Class names (any case, digits/underscores ignored): neutral, happy|happiness,
surprise|surprised, fear|fearful, anger|angry, disgust|disgusted, sad|sadness,
contempt (8-class configs only). Images: jpg, jpeg, png, bmp, tif, webp, gif, pgm.
"""

    @classmethod
    def missing_manual_files(cls, root: str, config: ImageFolderConfig) -> List[str]:
        if not os.path.isdir(root):
            return [f"{root}/ (the dataset ROOT folder)"]
        try:
            _class_folders(root)
        except ValueError as e:
            return [str(e)]
        return []

    def _record_settings(self) -> face_records.RecordSettings:
        cfg = self.builder_config
        return face_records.RecordSettings(image_size=cfg.image_size, margin=cfg.margin,
                                           find_face=True)

    def _split_tasks(self, root: str) -> Dict[str, List[face_records.FaceTask]]:
        num_classes = self.builder_config.num_classes
        splits: Dict[str, List[face_records.FaceTask]] = {}
        folders = _class_folders(root)
        if not any(split for split, _, _ in folders):
            splits = {"train": [], "test": []}  # both exist even if one ends up empty
        for split, class_dir, expression in folders:
            label = codebook.EXPRESSIONS.index(expression)
            for name in face_records.list_images(os.path.join(root, class_dir)):
                rel = os.path.join(class_dir, name).replace(os.sep, "/")
                file_split = split or hashed_split(rel)
                tasks = splits.setdefault(file_split, [])
                if label >= num_classes:
                    dropped = self._count(file_split).dropped
                    reason = f"{expression} ({num_classes}-class config)"
                    dropped[reason] = dropped.get(reason, 0) + 1
                    continue
                tasks.append(face_records.FaceTask(rel, os.path.join(root, rel), label))
        if "test" not in splits and "validation" in splits:
            # The trainer evaluates on "test": a lone validation split plays that role.
            logging.info("image_folder: no test split, using validation as test")
            splits["test"] = splits.pop("validation")
        return {split: sorted(tasks, key=lambda t: t.key) for split, tasks in splits.items()}


def _class_folders(root: str) -> List[Tuple[Optional[str], str, str]]:
    """[(split or None, class folder relative to root, expression)].

    Raises ValueError naming folders that are neither a class nor a split.
    """
    top = _subdirs(root)
    if not top:
        raise ValueError(f"{root}/<class>/ folders (found none)")
    if all(canonical_split(d) for d in top) and not any(canonical_class(d) for d in top):
        found: List[Tuple[Optional[str], str, str]] = []
        for split_dir in top:
            classes = _subdirs(os.path.join(root, split_dir))
            bad = [c for c in classes if canonical_class(c) is None]
            if bad or not classes:
                raise ValueError(
                    f"{os.path.join(root, split_dir)}/: folders {bad or '(none)'} are not "
                    f"expression names; accepted: {sorted(CLASS_ALIASES)}")
            for c in classes:
                expression = canonical_class(c)
                assert expression is not None   # `bad` is empty
                found.append((canonical_split(split_dir), f"{split_dir}/{c}", expression))
        return found
    bad = [d for d in top if canonical_class(d) is None]
    if bad:
        raise ValueError(
            f"{root}/: folders {bad} are not expression names; accepted: "
            f"{sorted(CLASS_ALIASES)} (or split folders {sorted(SPLIT_ALIASES)} "
            "each holding class folders)")
    found = []
    for d in top:
        expression = canonical_class(d)
        assert expression is not None   # `bad` is empty
        found.append((None, d, expression))
    return found
