"""`python -m data_prep.benchmark [--num=800] [--workers=2]`: data preparation speed and size, as JSON.

Measures, on pre-cropped 224 px faces (jittered copies of scikit-image's
astronaut photo, written as JPEG files in an image_folder layout):
- records_per_s: `make_record` (read, dlib detector + 68 landmarks, AU heatmap,
  JPEG/PNG encoding) over `workers` processes, no TFDS, as rafdb/aligned and
  affectnet crops are prepared; records_per_s_image_folder: the same with the
  face first searched in the whole photo (image_folder);
- build_images_per_s: the whole `image_folder` build (TFDS writing and
  shuffling included), as `python -m data_prep.build` runs it, after a tiny
  warm-up build (TFDS's one-time lazy imports, ~3 s, are not counted);
- tfrecord_bytes_per_example vs image_bytes_per_example: the stored record
  against the encoded image alone (ratio; the issue asks <= 1.3).
- cpu_ms_per_record (one process) and records_per_s_idle_estimate = workers
  / that: what `workers` idle cores would do; load_average_1min says how busy
  the machine was (images/s fall when other jobs share the cores).
`--records_only=DATA_DIR` times nothing: it builds image_folder/faces<image_size> records of
the --num faces there (the records of `python -m fer_jax.benchmark --input=records`).
Not a test: numbers depend on the machine. Needs scikit-image (tests extra).
"""
import json
import os
import shutil
import tempfile
import time
from typing import Dict, List

from absl import app, flags
import cv2
import numpy as np

from data_prep import build, faces, landmarks, parallel
from data_prep.builders import face_records, image_folder

FLAGS = flags.FLAGS
flags.DEFINE_integer("num", 800, "Number of face images.")
flags.DEFINE_integer("workers", 2, "Worker processes.")
flags.DEFINE_integer("image_size", 224, "Side of the pre-cropped faces and of the records.")
flags.DEFINE_string("workdir", None, "Scratch folder (default: a temporary one, removed).")
flags.DEFINE_string("records_only", None, "Time nothing: build `image_folder/faces<image_size>` "
                    "records of --num faces in this data_dir (the 224 px records of "
                    "`python -m fer_jax.benchmark --input=records`).")

# The astronaut's face box in skimage's 512 px photo (dlib's detection).
_FACE_BOX = (175.0, 76.0, 268.0, 172.0)
_CLASSES = ("neutral", "happy", "surprise", "fear", "angry", "disgust", "sad")


def _faces(num: int, size: int, seed: int = 0):
    """num (size, size, 3) RGB face crops: the box +30%, jittered in shift, scale, flip, light."""
    try:
        import skimage.data
    except ImportError as e:
        raise SystemExit("data_prep.benchmark needs scikit-image (pip install scikit-image)") from e
    photo = skimage.data.astronaut()
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = _FACE_BOX
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * (1 + faces.FACE_MARGIN)
    for _ in range(num):
        s = side * rng.uniform(0.9, 1.1)
        dx, dy = rng.uniform(-0.05, 0.05, 2) * side
        angle = rng.uniform(-8, 8)
        m = cv2.getRotationMatrix2D((cx + dx, cy + dy), angle, size / s)
        m[:, 2] += (size / 2 - (cx + dx), size / 2 - (cy + dy))
        face = cv2.warpAffine(photo, m, (size, size), flags=cv2.INTER_AREA,
                              borderMode=cv2.BORDER_REFLECT)
        if rng.random() < 0.5:
            face = face[:, ::-1]
        yield np.clip(face * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)


def write_faces(root: str, num: int, image_size: int) -> List[face_records.FaceTask]:
    """Writes `num` jittered faces as ROOT/<class>/<n>.jpg (an image_folder layout, the
    7 classes in turn); returns their record tasks."""
    tasks = []
    for i, face in enumerate(_faces(num, image_size)):
        cls = _CLASSES[i % len(_CLASSES)]
        path = os.path.join(root, cls, f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        tasks.append(face_records.FaceTask(path, path, i % len(_CLASSES)))
    return tasks


def build_face_records(data_dir: str, num: int, image_size: int, workers: int) -> str:
    """`image_folder/faces<image_size>` records of `num` jittered faces in `data_dir`, built as
    `python -m data_prep.build` builds a folder of photos (train/test about 80/20); the
    faces are written to a scratch folder, removed after. Returns the dataset's name."""
    root = tempfile.mkdtemp(prefix="fer_jax_faces_")
    try:
        write_faces(root, num, image_size)
        # A custom config needs a name of its own (build.build_dataset).
        config = image_folder.ImageFolderConfig(name=f"faces{image_size}",
                                                image_size=image_size)
        build.build_dataset("image_folder", data_dir, root, workers=workers, config=config)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return f"image_folder/faces{image_size}"


def run(num: int, workers: int, image_size: int, workdir: str) -> dict:
    """Writes the faces, prepares them twice (bare, then a TFDS build); returns the figures."""
    root = os.path.join(workdir, "faces")
    tasks = write_faces(root, num, image_size)

    landmarks.load_models()  # model loading is not record preparation
    # As rafdb/aligned and affectnet (layout b, 7_dlib) prepare their crops.
    crops = face_records.RecordSettings(image_size=image_size)
    start = time.perf_counter()
    records = list(parallel.ordered_map(face_records.RecordMaker(crops), tasks, workers))
    records_s = time.perf_counter() - start
    # CPU time per image in this process: unlike images/s, it does not depend
    # on what else runs on the machine.
    sample = tasks[:min(len(tasks), 200)]
    cpu = time.process_time()
    for _ in map(face_records.RecordMaker(crops), sample):
        pass
    cpu_ms = (time.process_time() - cpu) / len(sample) * 1000
    # As image_folder does: look for the face in the whole photo first.
    photos = face_records.RecordSettings(image_size=image_size, margin=faces.FACE_MARGIN,
                                         find_face=True)
    start = time.perf_counter()
    for _ in parallel.ordered_map(face_records.RecordMaker(photos), tasks, workers):
        pass
    photos_s = time.perf_counter() - start
    sources: Dict[str, int] = {}
    for r in records:
        sources[r.example["landmark_source"]] = sources.get(r.example["landmark_source"], 0) + 1

    data_dir = os.path.join(workdir, "data")
    # Warm-up build of a few images: TFDS imports a lot lazily on its first
    # build (~3 s once per process), which is not per-image cost.
    warm = os.path.join(workdir, "warm")
    for split in ("train", "test"):
        os.makedirs(os.path.join(warm, split, "happy"), exist_ok=True)
        shutil.copy(tasks[0].path, os.path.join(warm, split, "happy", "0.jpg"))
    build.build_dataset("image_folder", data_dir, warm, overwrite=True, workers=workers,
                        config=image_folder.ImageFolderConfig(name="warmup", image_size=image_size))

    config = image_folder.ImageFolderConfig(name=f"bench{image_size}", image_size=image_size)
    start, cpu = time.perf_counter(), time.process_time()
    builder = build.build_dataset("image_folder", data_dir, root, overwrite=True,
                                  workers=workers, config=config)
    build_s = time.perf_counter() - start
    main_cpu_ms = (time.process_time() - cpu) / num * 1000
    shards = [os.path.join(builder.data_dir, f) for f in os.listdir(builder.data_dir)
              if ".tfrecord" in f]
    tfrecord_bytes = sum(os.path.getsize(p) for p in shards)
    image_bytes = sum(len(r.example["image"]) for r in records)
    heatmap_bytes = sum(len(r.example["heatmap"]) for r in records)
    return {
        "num_images": num,
        "image_size": image_size,
        "workers": workers,
        "cpu_cores": parallel.default_workers(),
        "records_per_s": round(num / records_s, 1),
        "records_per_s_image_folder": round(num / photos_s, 1),
        "cpu_ms_per_record": round(cpu_ms, 2),
        "records_per_s_idle_estimate": round(workers * 1000 / cpu_ms, 1),
        "build_main_process_cpu_ms_per_image": round(main_cpu_ms, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "build_images_per_s": round(num / build_s, 1),
        "build_seconds": round(build_s, 2),
        "landmark_sources": sources,
        "tfrecord_bytes_per_example": round(tfrecord_bytes / num, 1),
        "image_bytes_per_example": round(image_bytes / num, 1),
        "heatmap_bytes_per_example": round(heatmap_bytes / num, 1),
        "tfrecord_over_image": round(tfrecord_bytes / image_bytes, 3),
        "tfrecord_without_heatmap_over_image": round(
            (tfrecord_bytes - heatmap_bytes) / image_bytes, 3),
    }


def main(argv):
    del argv
    if FLAGS.records_only:
        name = build_face_records(FLAGS.records_only, FLAGS.num, FLAGS.image_size,
                                  FLAGS.workers)
        print(f"built {name} in {FLAGS.records_only}")
        return
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="fer_jax_data_bench_")
    try:
        result = run(FLAGS.num, FLAGS.workers, FLAGS.image_size, workdir)
    finally:
        if FLAGS.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
