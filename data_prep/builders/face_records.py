"""Face image file -> fer_jax record, over worker processes, with build counters.

What the real-data builders (rafdb, affectnet, image_folder) share:
- `make_record`: one `FaceTask` (file, label, optional dataset box/landmarks)
  -> the example dict of `features.fer_features` (JPEG image, landmarks, source,
  PNG heatmap, validity, label), or the reason it was skipped. Reading and
  cropping come from `data_prep.faces`, which fer_jax.predict shares.
- `generate_examples`: `make_record` over an ordered process pool (same output
  order, hence byte-identical TFRecords, for any worker count), with a progress
  bar, counting into a `SplitCounts`.
- `FaceRecordsBuilder`: the TFDS builder base class holding the worker count,
  the counters (`build_report`), the manual-files check, the DatasetInfo and
  the rule for splits without a readable image (left out and reported).
"""
import abc
import collections
import dataclasses
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import cv2
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from data_prep import codebook, faces, heatmaps, landmarks
from data_prep.parallel import default_workers, ordered_map
from data_prep.builders import features

Box = landmarks.Box


# --- One record --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FaceTask:
    """One image to turn into a record (pickled to a worker)."""
    key: str                                  # unique id: TFDS key and the example's `id`
    path: str                                 # image file
    label: int                                # canonical class index (codebook order)
    box: Optional[Box] = None                 # dataset face box, file pixels (x0, y0, x1, y1)
    landmarks: Optional[np.ndarray] = None    # dataset (68, 2) landmarks, file pixels


@dataclasses.dataclass(frozen=True)
class RecordSettings:
    """How every task of a build becomes a record (fixed per builder config)."""
    image_size: int                # stored square side, pixels
    margin: float = 0.0            # crop = square box enlarged by this fraction
    find_face: bool = False        # no dataset box: detect the face in the whole photo
                                   # (and keep photos that already are face crops whole)
    force_dlib: bool = False       # ignore dataset landmarks
    jpeg_quality: int = 95


@dataclasses.dataclass
class Record:
    """`make_record`'s answer: an example, or why the file was skipped."""
    key: str
    example: Optional[dict] = None  # fer_features layout; images already encoded
    skipped: Optional[str] = None   # reason, naming the file


def _encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# Smooth heatmaps: the SUB row filter at zlib level 6 gives the smallest files
# for the time (measured at 224 px: 6.2 kB in 1 ms; libpng's adaptive default
# at level 9 gives 7.3 kB in 8 ms).
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 6, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]


def _encode_png(gray: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", gray, _PNG_PARAMS)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def make_record(task: FaceTask, settings: RecordSettings) -> Record:
    """Reads, crops and annotates one face image.

    The example's image is the JPEG of the (S, S, 3) crop, its heatmap the PNG
    of the (S, S, 1) AU map (codebook regions of `task.label` on the landmarks).
    Unreadable files give Record(skipped=reason) instead of raising.
    """
    try:
        image, scale = faces.read_rgb(task.path)
    except faces.UnreadableImage as e:
        return Record(task.key, skipped=str(e))
    size = settings.image_size
    file_box: Optional[Box] = None
    if task.box is not None:
        x0, y0, x1, y1 = task.box
        file_box = (x0 * scale, y0 * scale, x1 * scale, y1 * scale)
    face_box = detected = None
    if file_box is not None:
        # A dataset's own box is always the crop (RAF-DB's protocol, AffectNet's crops).
        crop, transform = faces.face_crop(image, file_box, size, settings.margin,
                                          keep_face_crops_whole=False)
        face_box = transform.box(file_box)
    else:
        found = landmarks.detect_face_in_photo(image) if settings.find_face else None
        crop, transform = faces.face_crop(image, found, size, settings.margin)
        if found is not None:
            detected = transform.box(found)
    dataset_points = None
    if task.landmarks is not None:
        dataset_points = transform.points(np.asarray(task.landmarks, np.float64) * scale)
    marks = landmarks.locate(crop, dataset_points, face_box=face_box, detected_box=detected,
                             force_dlib=settings.force_dlib)
    heat, valid = heatmaps.rasterise(
        None if marks.source == "failed" else marks.points, task.label, (size, size))
    return Record(task.key, example={
        "id": task.key,
        "image": _encode_jpeg(crop, settings.jpeg_quality),
        "landmarks": marks.points.astype(np.float32),
        "landmark_source": marks.source,
        "heatmap": _encode_png(heatmaps.to_uint8(heat)),
        "heatmap_valid": bool(valid),
        "label": int(task.label),
    })


# --- Many records ------------------------------------------------------------

@dataclasses.dataclass
class SplitCounts:
    """What one split's build produced (a section of build_report.json)."""
    examples: int = 0
    per_class: Dict[str, int] = dataclasses.field(default_factory=dict)
    landmark_sources: Dict[str, int] = dataclasses.field(default_factory=dict)
    heatmap_valid: int = 0
    skipped_files: List[str] = dataclasses.field(default_factory=list)  # "file: reason"
    dropped: Dict[str, int] = dataclasses.field(default_factory=dict)   # reason -> count
    seconds: float = 0.0
    left_out: Optional[str] = None  # why the split was not written (no readable image)

    def count_keys(self, class_names: Sequence[str]) -> None:
        """Every class and landmark source present in the counters, zero if unseen."""
        self.per_class = {name: self.per_class.get(name, 0) for name in class_names}
        self.landmark_sources = {s: self.landmark_sources.get(s, 0)
                                 for s in features.LANDMARK_SOURCES}

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["skipped"] = len(self.skipped_files)
        out["seconds"] = round(self.seconds, 2)
        return out


def generate_examples(
    tasks: Sequence[FaceTask],
    settings: RecordSettings,
    class_names: Sequence[str],
    counts: SplitCounts,
    workers: int,
    desc: str = "records",
) -> Iterator[Tuple[str, dict]]:
    """(key, example) for every readable task, in task order, counting into `counts`.

    Unreadable files are logged (warning naming the file) and listed in
    `counts.skipped_files`, never raised; with no readable file nothing is
    yielded (the builder leaves such splits out before, see `unreadable_files`).
    """
    start = time.perf_counter()
    counts.count_keys(class_names)
    records = ordered_map(RecordMaker(settings), tasks, workers)
    for record in tqdm.tqdm(records, total=len(tasks), desc=desc, unit="img",
                            mininterval=1.0, smoothing=0.05):
        if record.example is None:
            logging.warning("Skipped unreadable image %s", record.skipped)
            counts.skipped_files.append(record.skipped)
            continue
        ex = record.example
        counts.examples += 1
        counts.per_class[class_names[ex["label"]]] += 1
        counts.landmark_sources[ex["landmark_source"]] += 1
        counts.heatmap_valid += int(ex["heatmap_valid"])
        yield record.key, ex
    counts.seconds += time.perf_counter() - start


def unreadable_files(tasks: Sequence[FaceTask]) -> Optional[List[str]]:
    """None if some task's image can be read, else the reason of each (all unreadable).

    Files are decoded in order until one reads: for a sound split, only its first.
    """
    reasons = []
    for task in tasks:
        try:
            faces.read_rgb(task.path)
        except faces.UnreadableImage as e:
            reasons.append(str(e))
        else:
            return None
    return reasons


@dataclasses.dataclass(frozen=True)
class RecordMaker:
    """make_record with fixed settings: picklable for a process pool (unlike a lambda)."""
    settings: RecordSettings

    def __call__(self, task: FaceTask) -> Record:
        return make_record(task, self.settings)


def list_images(folder: str) -> List[str]:
    """Image files directly in `folder` (by extension, case-insensitive), sorted by name."""
    return sorted(name for name in os.listdir(folder)
                  if not name.startswith(".") and name.lower().endswith(faces.IMAGE_EXTENSIONS))


# --- Builder base ------------------------------------------------------------

# tfds's registration keyword is invisible to mypy (its __init_subclass__ is untyped).
class FaceRecordsBuilder(tfds.core.GeneratorBasedBuilder,
                         skip_registration=True):  # type: ignore[call-arg]
    """Base of builders whose examples come from face image files via `make_record`.

    Subclasses define `missing_manual_files(root)`, `_record_settings()` and
    `_split_tasks(root) -> {split: [FaceTask]}` (and HOMEPAGE; configs have
    `image_size` and `num_classes`); this class runs the tasks over `workers`
    processes and fills `build_report` (split -> SplitCounts).

    A split without a readable image (e.g. the one corrupt file of a small
    folder that the hash split sends to "test") is left out, with a warning
    and its reason in the report: one bad file never costs the good ones. Only
    a dataset with no readable image at all (a wrong --manual_dir) fails.
    """

    HOMEPAGE: Optional[str] = None  # where the dataset is requested (DatasetInfo.homepage)

    def __init__(self, *, workers: Optional[int] = None, **kwargs):
        """workers: processes preparing records (default: all cores); does not change the data."""
        super().__init__(**kwargs)
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"workers={workers}; expected >= 1")
        self.build_report: Dict[str, SplitCounts] = collections.OrderedDict()

    @classmethod
    @abc.abstractmethod
    def missing_manual_files(cls, root: str, config: tfds.core.BuilderConfig) -> List[str]:
        """Descriptions of the expected files/folders not found under `root` ([] if fine)."""

    @abc.abstractmethod
    def _split_tasks(self, root: str) -> Dict[str, List[FaceTask]]:
        """Split name -> tasks in a deterministic order (sorted by key)."""

    @abc.abstractmethod
    def _record_settings(self) -> RecordSettings:
        """How this config turns a task into a record."""

    @classmethod
    def check_manual_dir(cls, root: str, config: tfds.core.BuilderConfig) -> None:
        """Raises one FileNotFoundError listing everything missing under `root`."""
        missing = cls.missing_manual_files(str(root), config)
        if missing:
            raise FileNotFoundError(
                f"{cls.name}: the manual files are incomplete in {root}. Missing:\n  - "
                + "\n  - ".join(missing)
                + f"\n\nWhat to put where:\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")

    def num_classes(self) -> int:
        """7 (the basic expressions) or 8 (with Contempt), from the config."""
        n = self.builder_config.num_classes
        if n not in (codebook.NUM_BASIC, len(codebook.EXPRESSIONS)):
            raise ValueError(f"{self.name}: num_classes={n}; expected {codebook.NUM_BASIC} "
                             f"or {len(codebook.EXPRESSIONS)}")
        return n

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features.fer_features(self.builder_config.image_size,
                                           codebook.EXPRESSIONS[:self.num_classes()]),
            supervised_keys=("image", "label"),
            homepage=self.HOMEPAGE,
            # Each builder's module docstring says what the dataset is and where from.
            description=sys.modules[type(self).__module__].__doc__,
        )

    def _split_generators(self, dl_manager):
        # Not dl_manager.manual_dir: its assertion does not say which files are missing.
        root = str(dl_manager._manual_dir)  # pylint: disable=protected-access
        self.check_manual_dir(root, self.builder_config)
        splits = self._split_tasks(root)
        total = sum(len(tasks) for tasks in splits.values())
        if not total:
            raise ValueError(f"{self.name}: no images found under {root}")
        generators, skipped = {}, []
        for split, tasks in splits.items():
            # TFDS cannot write a split without examples: find out before it tries.
            reasons = unreadable_files(tasks)
            if reasons is None:
                generators[split] = self._generate_examples(split, tasks)
                continue
            counts = self._count(split)
            counts.count_keys(self.info.features["label"].names)
            for reason in reasons:
                logging.warning("Skipped unreadable image %s", reason)
            counts.skipped_files += reasons
            skipped += reasons
            counts.left_out = (f"no readable image: all {len(tasks)} file(s) unreadable"
                               if tasks else "no images")
            logging.warning("%s/%s: split %r is EMPTY and NOT written (%s); the other "
                            "splits are. See build_report.json.", self.name,
                            self.builder_config.name, split, counts.left_out)
        if not generators:
            raise ValueError(
                f"{self.name}: none of the {total} images under {root} could be read "
                f"(is it the dataset's folder?), e.g. " + "; ".join(skipped[:3]))
        return generators

    def _count(self, split: str) -> SplitCounts:
        return self.build_report.setdefault(split, SplitCounts())

    def _generate_examples(self, split: str, tasks: List[FaceTask]):
        counts = self._count(split)
        yield from generate_examples(
            tasks, self._record_settings(), self.info.features["label"].names, counts,
            self.workers, desc=f"{self.name}/{self.builder_config.name} {split}")
