"""Predict speed and memory: `python -m fer_jax.benchmark --predict` calls `measure`.

Writes a folder of 640x480 photos with one face each (the scikit-image
astronaut's face at random sizes and places on varied backgrounds), builds
the demo model (configs/default.py: ResNet-18 width 16, 64 px; random weights,
which cost the same as trained ones), and runs `fer_jax.predict.run_cli` over
the folder with and without pictures, end to end (decode, dlib, crop,
landmarks, model + CAM + attention, AU map, tables, PNGs). Reports images/s
and the peak resident memory of each run for a small and a 4x larger folder,
so that a memory that grows with the folder would show.
"""
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Dict

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


def _one_run(folder: str, out: str, pictures: bool, workers: int) -> Dict[str, Any]:
    """Runs the predict CLI's function in a fresh process; returns its timing and peak memory."""
    code = f"""
import json, resource, time
from fer_jax import config_schema, models, predict, runs
import jax, jax.numpy as jnp
cfg = config_schema.defaults()
import importlib.util
spec = importlib.util.spec_from_file_location("c", {os.path.join(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))), "configs", "default.py")!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); cfg = m.get_config()
model = models.create_model(cfg.model, 7)
s = cfg.dataset.image_size
variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, s, s, 3)))
names = ["Neutral", "Happiness", "Surprise", "Fear", "Anger", "Disgust", "Sadness"]
restored = runs.Restored(model, variables, 0, names, cfg, s)
p = predict.Predictor(restored, workers={workers}, batch_size=32,
                      preview_side=640 if {pictures} else 0)
first = predict.list_images({folder!r})[0][0]
for _ in p.predict_many([first] * 32):   # compile the full batch outside the timing
    pass
t = time.perf_counter()
counts = predict.run_cli(p, {folder!r}, {out!r}, pictures={pictures}, progress=False)
seconds = time.perf_counter() - t
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({{"seconds": seconds, "images": counts["images"], "faces": counts["faces"],
                  "peak_rss_mib_main": own / 1024, "peak_rss_mib_worker": kids / 1024}}))
"""
    env = dict(os.environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
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


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 200)))
