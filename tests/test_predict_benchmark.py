"""What `benchmark --predict` compares and times: the side-by-side with the `fer` package
(--reference=fer): fer's side (fer_reference.py, run here against a stand-in `fer`
module, since fer itself cannot share fer_jax's environment) and how both sides' faces
and labels are counted; the clip of --predict_video."""
import json
import os
import sys
import types

import cv2
import numpy as np
import pytest

from fer_jax import fer_reference, predict_benchmark

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.fixture
def stand_in_fer(monkeypatch):
    """A `fer` module whose FER finds one face on bright photos and none on dark ones,
    labelled by the photo's blue level; it records the photos it was shown."""
    seen = []

    class FER:
        def __init__(self, mtcnn=False, use_tflite=True):
            assert mtcnn is False   # the Haar cascade, fer's default
            seen.append("tflite" if use_tflite else "keras")

        def detect_emotions(self, image):
            seen.append(image.shape)
            if image.mean() < 50:
                return []
            scores = dict.fromkeys(EMOTIONS, 0.05)
            scores["happy" if image[..., 0].mean() > 128 else "sad"] = 0.7
            return [{"box": (4, 5, 20.0, 21), "emotions": scores}]

    package, module = types.ModuleType("fer"), types.ModuleType("fer.fer")
    package.__version__, package.fer, module.FER = "0.test", module, FER
    monkeypatch.setitem(sys.modules, "fer", package)
    monkeypatch.setitem(sys.modules, "fer.fer", module)
    return seen


def test_fer_side_reports_every_photo_with_our_class_names(tmp_path, stand_in_fer):
    bright_blue = np.full((40, 40, 3), (200, 90, 90), np.uint8)     # BGR: blue > 128
    bright_red = np.full((40, 40, 3), (90, 90, 200), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), bright_blue)
    cv2.imwrite(str(tmp_path / "b.jpg"), bright_red)
    cv2.imwrite(str(tmp_path / "c.png"), np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not a photo")
    out = fer_reference.run(str(tmp_path), "keras")
    json.dumps(out)   # one JSON line for the benchmark
    assert out["tool"] == "fer" and out["version"] == "0.test" and out["images"] == 3
    assert out["model"] == "keras"
    # The Keras model (not fer's quantized default), then the warm-up photo and each photo once.
    assert stand_in_fer[0] == "keras" and len(stand_in_fer) == 5
    rows = {r["file"]: r["faces"] for r in out["rows"]}
    assert rows["c.png"] == []
    assert rows["a.png"][0]["label"] == "Happiness" and rows["b.jpg"][0]["label"] == "Sadness"
    assert rows["a.png"][0]["box"] == [4, 5, 20, 21]
    assert set(rows["a.png"][0]["probabilities"]) == {
        "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Neutral"}
    assert out["seconds"] > 0


def test_an_empty_folder_and_an_unknown_model_are_named(tmp_path, stand_in_fer):
    with pytest.raises(SystemExit, match=f"no photos .* in {tmp_path}"):
        fer_reference.run(str(tmp_path))
    with pytest.raises(SystemExit, match=r"model='onnx': expected one of \('tflite', 'keras'\)"):
        fer_reference.run(str(tmp_path), "onnx")


def test_comparison_counts_faces_and_agreeing_labels_of_both_sides(tmp_path, monkeypatch):
    """Our faces come from predict's predictions.jsonl, fer's from its JSON; labels are
    compared only where each side found exactly one face."""
    def fake_one_run(folder, out, pictures, workers, shipped=False):
        assert shipped   # the shipped model, the one fer also runs
        rows = [("p1.jpg", 0, "ok", "Happiness", "gradcam++", 0.7),
                ("p2.jpg", 0, "ok", "Anger", "gradcam++", None),
                ("p3.jpg", None, "no_face", None, "", None),
                ("p4.jpg", 0, "ok", "Fear", "gradcam++", 0.5),
                ("p4.jpg", 1, "ok", "Fear", "gradcam++", 0.4)]
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "predictions.jsonl"), "w") as f:
            for path, face, status, label, cam, cos in rows:
                f.write(json.dumps({"path": f"/photos/{path}", "face": face, "status": status,
                                    "label": label, "cam_method": cam, "cam_cos": cos}) + "\n")
        return {"images": 4, "seconds": 2.0 if pictures else 1.0,
                "images_per_second": 2.0 if pictures else 4.0}

    def fake_fer_run(folder, fer_python, model):
        assert fer_python == "/envs/fer/bin/python"
        face = lambda label: {"box": [0, 0, 1, 1], "label": label}   # noqa: E731
        second = {"tflite": [face("Sadness")], "keras": [face("Anger")]}[model]
        return {"version": "0.test", "detector": "Haar", "images": 4,
                "seconds": {"tflite": 8.0, "keras": 16.0}[model],
                "rows": [{"file": "p1.jpg", "faces": [face("Happiness")]},
                         {"file": "p2.jpg", "faces": second},
                         {"file": "p3.jpg", "faces": []},
                         {"file": "p4.jpg", "faces": []}]}
    monkeypatch.setattr(predict_benchmark, "_one_run", fake_one_run)
    monkeypatch.setattr(predict_benchmark, "_fer_run", fake_fer_run)
    out = predict_benchmark.compare_with_fer(str(tmp_path), "/envs/fer/bin/python", workers=1)
    assert out["photos"] == 4
    assert out["fer_jax"]["faces_found"] == 4 and out["fer_jax"]["photos_with_a_face"] == 3
    assert out["fer_jax"]["faces_with_a_cam"] == 4
    assert out["fer_jax"]["faces_with_an_au_agreement"] == 3
    quantized, keras = out["fer_tflite"], out["fer_keras"]
    assert quantized["faces_found"] == 2 and quantized["photos_with_a_face"] == 2
    assert quantized["images_per_second"] == 0.5 and keras["images_per_second"] == 0.25
    assert quantized["speedup_without_pictures"] == 8.0
    assert quantized["speedup_with_pictures"] == 4.0 and keras["speedup_with_pictures"] == 8.0
    assert quantized["photos_with_one_face_in_both"] == 2
    assert quantized["same_label_on_those"] == 1 and keras["same_label_on_those"] == 2
    assert out["labels"]["p4.jpg"] == {"fer_jax": ["Fear", "Fear"], "fer_tflite": [],
                                       "fer_keras": []}


def test_benchmark_clip_has_the_frames_size_and_rate_it_names(tmp_path):
    """The clip `benchmark --predict --predict_video=N` times: N frames of 640x480 at 25
    frames/s, read back by predict's own video reader, the face moving between frames."""
    from fer_jax import video
    path = str(tmp_path / "clip.mp4")
    predict_benchmark.write_clip(path, 6)
    reader = video.VideoReader(path)
    frames = list(reader.frames())
    assert len(frames) == 6 and reader.fps == 25.0
    assert frames[0].rgb.shape == (480, 640, 3)
    assert np.abs(frames[0].rgb.astype(int) - frames[5].rgb.astype(int)).mean() > 1
