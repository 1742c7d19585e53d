"""Face image file -> fer_jax record, over worker processes, with build counters.

What the real-data builders (rafdb, affectnet, image_folder) share:
- `read_rgb`: any readable image file -> (H, W, 3) RGB uint8 (grey, CMYK, RGBA,
  16-bit become 8-bit RGB); huge JPEGs are decoded at 1/2, 1/4 or 1/8 size so
  memory stays bounded.
- `make_record`: one `FaceTask` (file, label, optional dataset box/landmarks)
  -> the example dict of `features.fer_features` (JPEG image, landmarks, source,
  PNG heatmap, validity, label), or the reason it was skipped.
- `generate_examples`: `make_record` over an ordered process pool (same output
  order, hence byte-identical TFRecords, for any worker count), with a progress
  bar, counting into a `SplitCounts`.
- `FaceRecordsBuilder`: the TFDS builder base class holding the worker count,
  the counters (`build_report`) and the manual-files check.
"""
import abc
import collections
import dataclasses
import io
import multiprocessing
import os
import sys
import threading
import time
import warnings
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import cv2
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from data_prep import heatmaps, landmarks
from data_prep.builders import features

Box = landmarks.Box

# Decoded images are kept below this many pixels (~48 MB as RGB) by decoding
# large JPEGs at reduced size; face crops need far fewer pixels than that.
MAX_DECODE_PIXELS = 16_000_000
_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                  4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp",
                    ".gif", ".pgm", ".ppm", ".pbm")
# Enlarged face box covering at least this fraction of a photo: the photo is
# already a face crop, keep all of it rather than pad past its borders.
_ALREADY_CROPPED = 0.5


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


# --- Geometry ----------------------------------------------------------------

def square_box(box: Box, margin: float = 0.0) -> Box:
    """The square around `box`'s centre, side = longer side * (1 + margin).

    margin 0.3 is RAF-DB's "box enlarged by 30%" (15% on each side).
    """
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"face box {box} is empty; expected x0 < x1 and y0 < y1")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (1 + margin) / 2
    return (cx - half, cy - half, cx + half, cy + half)


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
      box: (x0, y0, x1, y1) pixel edges, or None for the whole image (then
        resized to a square, as torchvision's Resize((S, S)) would).
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
    shrink = rw > size or rh > size
    crop = cv2.resize(region, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop), CropTransform((float(x0), float(y0)),
                                                     (size / rw, size / rh))


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
        image, scale = read_rgb(task.path)
    except UnreadableImage as e:
        return Record(task.key, skipped=str(e))
    size = settings.image_size
    file_box = None if task.box is None else tuple(v * scale for v in task.box)
    crop_box = face_box = detected = found = None
    if file_box is not None:
        crop_box = square_box(file_box, settings.margin)
    elif settings.find_face:
        found = landmarks.detect_face_in_photo(image)
        if found is not None:
            crop_box = square_box(found, settings.margin)
            side = crop_box[2] - crop_box[0]
            if side * side >= _ALREADY_CROPPED * image.shape[0] * image.shape[1]:
                crop_box = None
    crop, transform = crop_resize(image, crop_box, size)
    if file_box is not None:
        face_box = transform.box(file_box)
    elif found is not None:
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

def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _worker_init() -> None:
    landmarks.load_models()  # once per worker, not once per task


def ordered_map(fn: Callable, items: Iterable, workers: int, chunksize: int = 8,
                max_in_flight: int = 512) -> Iterator:
    """fn over items in worker processes, results in input order (like map).

    workers <= 1 runs in this process. Forked workers (where available) skip
    re-importing TensorFlow; they only run numpy / cv2 / dlib code. At most
    `max_in_flight` items are queued, so results never pile up in memory.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    # Fork is fast, but not under JAX (fer_jax.main building a dataset): JAX's
    # runtime threads make forked children liable to deadlock, so spawn there.
    fork = "fork" in multiprocessing.get_all_start_methods() and "jax" not in sys.modules
    ctx = multiprocessing.get_context("fork" if fork else "spawn")
    if fork:
        # Load dlib here once: forked workers share it, instead of each loading
        # it again (~1 s per worker and per split).
        _worker_init()
    max_in_flight = max(max_in_flight, 2 * chunksize * workers)
    slots = threading.Semaphore(max_in_flight)
    stop = threading.Event()

    def feed():
        for item in items:
            while not slots.acquire(timeout=0.1):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            yield item

    # Forked children inherit cv2's thread-pool state but not its threads: any
    # cv2 call that touches the pool would then wait forever. With one cv2
    # thread while forking, the children run cv2 serially (one process per core
    # already) and never touch a pool; this process gets its threads back after.
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        pool = ctx.Pool(workers, initializer=_worker_init)
    finally:
        cv2.setNumThreads(cv2_threads)
    try:
        for result in pool.imap(fn, feed(), chunksize):
            slots.release()
            yield result
        pool.close()
    finally:
        stop.set()
        pool.terminate()
        pool.join()


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
    `counts.skipped_files`, never raised.
    """
    start = time.perf_counter()
    counts.per_class = {name: counts.per_class.get(name, 0) for name in class_names}
    counts.landmark_sources = {s: counts.landmark_sources.get(s, 0)
                               for s in features.LANDMARK_SOURCES}
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
    if tasks and not counts.examples:
        raise ValueError(
            f"{desc}: none of the {len(tasks)} images could be read, e.g. "
            + "; ".join(counts.skipped_files[:3]))


@dataclasses.dataclass(frozen=True)
class RecordMaker:
    """make_record with fixed settings: picklable for a process pool (unlike a lambda)."""
    settings: RecordSettings

    def __call__(self, task: FaceTask) -> Record:
        return make_record(task, self.settings)


def list_images(folder: str) -> List[str]:
    """Image files directly in `folder` (by extension, case-insensitive), sorted by name."""
    return sorted(name for name in os.listdir(folder)
                  if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS))


# --- Builder base ------------------------------------------------------------

class FaceRecordsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of builders whose examples come from face image files via `make_record`.

    Subclasses define `_info`, `missing_manual_files(root)` and
    `_split_tasks(root) -> {split: [FaceTask]}`; this class runs the tasks
    over `workers` processes and fills `build_report` (split -> SplitCounts).
    """

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

    def _split_generators(self, dl_manager):
        # Not dl_manager.manual_dir: its assertion does not say which files are missing.
        root = str(dl_manager._manual_dir)  # pylint: disable=protected-access
        self.check_manual_dir(root, self.builder_config)
        splits = self._split_tasks(root)
        for split in [s for s, tasks in splits.items() if not tasks]:
            # TFDS cannot write a split without examples.
            logging.warning("%s: split %r has no images; it is left out.", self.name, split)
            del splits[split]
        if not splits:
            raise ValueError(f"{self.name}: no images found under {root}")
        return {split: self._generate_examples(split, tasks) for split, tasks in splits.items()}

    def _count(self, split: str) -> SplitCounts:
        return self.build_report.setdefault(split, SplitCounts())

    def _generate_examples(self, split: str, tasks: List[FaceTask]):
        counts = self._count(split)
        yield from generate_examples(
            tasks, self._record_settings(), self.info.features["label"].names, counts,
            self.workers, desc=f"{self.name}/{self.builder_config.name} {split}")
