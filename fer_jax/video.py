"""Expressions on a video: decoding, a face track id across frames, temporal smoothing.

  python -m fer_jax.predict --video=FILE --output=OUT [--every=N] [--smoothing=S]
      [--track_iou=T] [--cam=gradcam++] [--no_pictures]

The faces of a frame go through exactly what a photo goes through
(`Predictor.predict_many`: dlib faces and landmarks, the model's crop, the
model, its CAM and AU agreement); this module only adds time:

- `VideoReader`: OpenCV decoding, frame index and time in seconds, and where a
  damaged file stopped.
- `match_tracks`: a track id per face, by greedy box overlap (IoU) with the
  previous analysed frame's faces. No appearance model, no re-identification:
  a face lost for one analysed frame (or one that moves more than its box
  between two) comes back with a new id.
- `smooth`: an exponential moving average of each track's probabilities.
- `run`: one JSONL and one CSV row per (frame, face), and an annotated copy of
  the video (`plots.video_frame`).
"""
import collections
import csv
import dataclasses
import json
import math
import os
from typing import (Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Protocol,
                    Sequence, Tuple)

import cv2
import numpy as np

from fer_jax import errors, plots

Box = Tuple[float, float, float, float]   # (x0, y0, x1, y1) pixel edges

EVERY = 1            # analyse every frame
SMOOTHING = 0.0      # weight of the past in the moving average: 0 = off
TRACK_IOU = 0.3      # least box overlap that continues a track
ANNOTATED = "annotated.mp4"
_FOURCC = "mp4v"     # MPEG-4 part 2: written by every OpenCV build with FFmpeg
_FALLBACK_FPS = 25.0


class Predicts(Protocol):
    """What `run` needs of a predictor (fer_jax.predict.Predictor)."""
    class_names: List[str]
    cam: str

    def predict_many(self, sources: Iterable[Any]) -> Iterator[Tuple[Any, List[Any]]]: ...


def check_options(every: int, smoothing: float, track_iou: float) -> None:
    """Fails early on a bad flag, naming it and its valid range."""
    if every < 1:
        raise errors.ConfigError(f"--every={every}: expected an integer >= 1")
    if not 0.0 <= smoothing < 1.0:
        raise errors.ConfigError(f"--smoothing={smoothing}: expected 0 <= smoothing < 1 "
                                 "(0: off)")
    if not 0.0 < track_iou <= 1.0:
        raise errors.ConfigError(f"--track_iou={track_iou}: expected 0 < track_iou <= 1")


# --- Decoding ---------------------------------------------------------------------

@dataclasses.dataclass
class Frame:
    """One decoded frame."""
    index: int                    # 0-based, in decoding order
    time: float                   # seconds: index / fps
    rgb: np.ndarray               # (H, W, 3) uint8


class VideoReader:
    """A video file opened with OpenCV; `frames()` decodes it once, in order.

    Raises FileNotFoundError for a missing file and ValueError for one OpenCV
    cannot open or decode a first frame of. A file that stops decoding early
    (truncated, damaged) yields what it can; `stopped` then says where.
    """

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such video file")
        # FFmpeg would print its own complaint ("moov atom not found") above ours.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        self.path = path
        self._capture = cv2.VideoCapture(path)
        ok, first = self._capture.read() if self._capture.isOpened() else (False, None)
        if not ok or first is None:
            self._capture.release()
            raise ValueError(f"{path}: OpenCV cannot decode this file as a video")
        self._first: Optional[np.ndarray] = first
        self.height, self.width = first.shape[:2]
        fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        self.fps_known = math.isfinite(fps) and fps > 0
        self.fps = fps if self.fps_known else _FALLBACK_FPS
        # The header's count (0: unknown). FFmpeg may estimate it from the duration.
        self.frame_count = max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.decoded = 0
        self.stopped = ""         # why decoding ended before frame_count, if it did

    def frames(self) -> Iterator[Frame]:
        """Every frame, in order, as RGB; then the file is closed."""
        if self._first is None:
            raise ValueError(f"{self.path}: frames() reads the video once")
        image: Optional[np.ndarray] = self._first
        self._first = None
        try:
            while image is not None:
                yield Frame(self.decoded, self.decoded / self.fps,
                            cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
                self.decoded += 1
                ok, image = self._capture.read()
                if not ok:
                    image = None
        finally:
            self._capture.release()
        if self.decoded < self.frame_count:
            self.stopped = (f"decoding stopped after frame {self.decoded - 1} (time "
                            f"{(self.decoded - 1) / self.fps:.2f} s); the file's header "
                            f"announces {self.frame_count} frames: truncated or damaged?")


# --- Tracking and smoothing (pure) ------------------------------------------------

def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1); 0 when either is empty."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match_tracks(previous: Mapping[int, Box], boxes: Sequence[Box], next_id: int,
                 min_iou: float = TRACK_IOU) -> Tuple[List[int], int]:
    """A track id for each box: greedy matching on box overlap with the previous frame.

    Pairs (track, box) are taken by decreasing IoU (ties: lower track id, then
    box order), each track and box at most once, while IoU >= min_iou; every
    box left gets a new id, in box order, from next_id on.

    Args:
      previous: {track id: its box in the previous analysed frame}.
      boxes: this frame's boxes.
      next_id: the first id never used.
    Returns:
      (an id per box, the next unused id).
    """
    pairs = sorted(((box_iou(pb, b), t, j) for t, pb in previous.items()
                    for j, b in enumerate(boxes)), key=lambda p: (-p[0], p[1], p[2]))
    ids: List[Optional[int]] = [None] * len(boxes)
    used = set()
    for overlap, track, j in pairs:
        if overlap < min_iou:
            break
        if track in used or ids[j] is not None:
            continue
        ids[j] = track
        used.add(track)
    out = []
    for track_id in ids:
        if track_id is None:
            track_id, next_id = next_id, next_id + 1
        out.append(track_id)
    return out, next_id


def smooth(previous: Optional[np.ndarray], current: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average: weight * previous + (1 - weight) * current.

    previous: the track's smoothed probabilities at its last analysed frame
    (None: a new track, which starts at `current`); weight in [0, 1), 0 = off.
    Convex, so probabilities stay probabilities.
    """
    current = np.asarray(current, np.float64)
    if previous is None or weight == 0.0:
        return current
    return weight * np.asarray(previous, np.float64) + (1.0 - weight) * current


# --- Frames with their faces ------------------------------------------------------

@dataclasses.dataclass
class VideoRow:
    """One face of one analysed frame (or the frame's no_face row: track None)."""
    frame: int
    time: float
    track: Optional[int]
    row: Any                                        # predict.FaceResult, probabilities smoothed
    raw_label: str = ""                             # the model's own (what the CAM explains)
    raw_probabilities: Dict[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self, path: str, smoothed: bool) -> Dict[str, Any]:
        out: Dict[str, Any] = {"frame": self.frame, "time": round(self.time, 4),
                               "track": self.track}
        out.update(self.row.to_json())
        out["path"] = path
        if smoothed:
            out["raw_label"] = self.raw_label
            out["raw_probabilities"] = {k: round(v, 6) for k, v in self.raw_probabilities.items()}
        return out

    def csv_row(self, path: str, class_names: Sequence[str], smoothed: bool) -> Dict[str, Any]:
        out: Dict[str, Any] = {"frame": self.frame, "time": round(self.time, 4),
                               "track": self.track}
        out.update(self.row.csv_row(class_names))
        out["path"] = path
        if smoothed:
            out["raw_label"] = self.raw_label
        return out


@dataclasses.dataclass
class AnalysedFrame:
    """A decoded frame and the faces drawn on it.

    analysed False: a frame skipped by --every; `rows` are then the last analysed
    frame's (what its annotated copy shows), and it has no table rows.
    """
    frame: Frame
    analysed: bool
    rows: List[VideoRow]


class _Tracks:
    """The tracker's and the smoother's state between analysed frames."""

    def __init__(self, class_names: Sequence[str], smoothing: float, min_iou: float):
        self.class_names, self.smoothing, self.min_iou = list(class_names), smoothing, min_iou
        self.boxes: Dict[int, Box] = {}
        self.probs: Dict[int, np.ndarray] = {}
        self.next_id = 0

    def update(self, frame: Frame, results: List[Any]) -> List[VideoRow]:
        faces = [r for r in results if r.face is not None]
        if not faces:     # no_face (or unreadable) frame: every track ends here
            self.boxes, self.probs = {}, {}
            return [VideoRow(frame.index, frame.time, None, r) for r in results]
        h, w = frame.rgb.shape[:2]
        boxes: List[Box] = [r.box if r.box is not None else (0.0, 0.0, float(w), float(h))
                            for r in faces]   # --no_detect: the whole frame is the face
        ids, self.next_id = match_tracks(self.boxes, boxes, self.next_id, self.min_iou)
        rows, probs = [], {}
        for track, r in zip(ids, faces):
            raw = np.array([r.probabilities[c] for c in self.class_names])
            p = smooth(self.probs.get(track), raw, self.smoothing)
            probs[track] = p
            best = int(np.argmax(p))
            shown = dataclasses.replace(
                r, label=self.class_names[best], confidence=float(p[best]),
                probabilities={c: float(v) for c, v in zip(self.class_names, p)})
            rows.append(VideoRow(frame.index, frame.time, track, shown, r.label,
                                 dict(r.probabilities)))
        self.boxes = dict(zip(ids, boxes))
        self.probs = probs    # tracks that ended are forgotten
        return rows


def analyse(predictor: Predicts, frames: Iterable[Frame], every: int = EVERY,
            smoothing: float = SMOOTHING, min_iou: float = TRACK_IOU
            ) -> Iterator[AnalysedFrame]:
    """Every frame in order, every `every`-th one (from frame 0) through the predictor.

    Frames are streamed: only those waiting for their batch (and the skipped
    frames after them) are held in memory.
    """
    check_options(every, smoothing, min_iou)
    tracks = _Tracks(predictor.class_names, smoothing, min_iou)
    pending: Deque[Frame] = collections.deque()

    def sampled() -> Iterator[np.ndarray]:
        for frame in frames:
            pending.append(frame)
            if frame.index % every == 0:
                yield frame.rgb

    last: List[VideoRow] = []
    for _, results in predictor.predict_many(sampled()):
        while pending[0].index % every:            # skipped frames before this one
            yield AnalysedFrame(pending.popleft(), False, last)
        frame = pending.popleft()
        last = tracks.update(frame, results)
        yield AnalysedFrame(frame, True, last)
    while pending:                                  # skipped frames after the last one
        yield AnalysedFrame(pending.popleft(), False, last)


# --- Command line -----------------------------------------------------------------

def run(predictor: Predicts, reader: VideoReader, output: str, every: int = EVERY,
        smoothing: float = SMOOTHING, min_iou: float = TRACK_IOU, annotate: bool = True,
        progress: bool = True) -> Dict[str, Any]:
    """Writes predictions.jsonl, predictions.csv and (annotate) annotated.mp4 into `output`.

    Returns counts: frames (decoded), analysed, faces (rows with a face),
    no_face (analysed frames without one), tracks (ids given), stopped
    (reader.stopped: "" when the whole file was read).
    """
    from tqdm import tqdm
    check_options(every, smoothing, min_iou)
    os.makedirs(output, exist_ok=True)
    writer = None
    if annotate:
        writer = cv2.VideoWriter(os.path.join(output, ANNOTATED),
                                 cv2.VideoWriter.fourcc(*_FOURCC), reader.fps,
                                 (reader.width, reader.height))
        if not writer.isOpened():
            raise ValueError(f"OpenCV cannot write {os.path.join(output, ANNOTATED)}")
    smoothed = smoothing > 0
    counts: Dict[str, Any] = {"frames": 0, "analysed": 0, "faces": 0, "no_face": 0}
    seen = set()
    table: Optional[csv.DictWriter] = None
    try:
        with open(os.path.join(output, "predictions.jsonl"), "w") as jf, \
                open(os.path.join(output, "predictions.csv"), "w", newline="") as cf:
            bar = tqdm(total=reader.frame_count or None, desc="video", unit="frame",
                       disable=not progress)
            for item in analyse(predictor, reader.frames(), every, smoothing, min_iou):
                counts["frames"] += 1
                if item.analysed:
                    counts["analysed"] += 1
                    for v in item.rows:
                        if table is None:   # the columns are those of any row
                            table = csv.DictWriter(cf, fieldnames=list(v.csv_row(
                                reader.path, predictor.class_names, smoothed)))
                            table.writeheader()
                        jf.write(json.dumps(v.to_json(reader.path, smoothed)) + "\n")
                        table.writerow(v.csv_row(reader.path, predictor.class_names, smoothed))
                        if v.track is not None:
                            counts["faces"] += 1
                            seen.add(v.track)
                    counts["no_face"] += all(v.track is None for v in item.rows)
                if writer is not None:
                    picture = plots.video_frame(item.frame.rgb, [v.row for v in item.rows],
                                                [v.track for v in item.rows])
                    writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                bar.update(1)
            bar.close()
    finally:
        if writer is not None:
            writer.release()
    counts["tracks"] = len(seen)
    counts["stopped"] = reader.stopped
    counts["fps_known"] = reader.fps_known
    return counts


def summary(counts: Mapping[str, Any], output: str, annotate: bool) -> str:
    """The line the command prints when it is done."""
    return (f"{counts['frames']} frames, {counts['analysed']} analysed: {counts['faces']} faces "
            f"in {counts['tracks']} tracks, {counts['no_face']} analysed frames without a face"
            + ("" if counts["fps_known"] else
               f" (the file gives no frame rate: times assume {_FALLBACK_FPS:g} frames/s)")
            + ". Wrote predictions.jsonl, predictions.csv"
            + (f" and {ANNOTATED}" if annotate else "") + f" in {output}.")
