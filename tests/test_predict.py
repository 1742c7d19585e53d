"""fer_jax.predict: a trained run on anyone's photos, every face, bad input never fatal."""
import csv
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

import fixtures_real as fx
import subprocess_runs
from data_prep import codebook, faces, heatmaps
from fer_jax import errors, predict, pretrained, weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_without_data(trained_run, tmp_path_factory):
    """The trained run copied (run.json + checkpoints), its dataset location made to vanish."""
    workdir, _ = trained_run
    copy = tmp_path_factory.mktemp("served")
    shutil.copytree(workdir / "checkpoints", copy / "checkpoints")
    run = json.load(open(workdir / "run.json"))
    run["config"]["dataset"]["data_dir"] = str(copy / "records_deleted")
    json.dump(run, open(copy / "run.json", "w"))
    return copy


@pytest.fixture(scope="module")
def predictor(run_without_data):
    return predict.Predictor.from_workdir(str(run_without_data), batch_size=4)


def two_faces() -> np.ndarray:
    """A photo with two copies of the astronaut's face, the left one larger."""
    face = fx.face_crop("orig", 200, margin=0.6)
    photo = np.full((300, 560, 3), 200, np.uint8)
    photo[20:220, 20:220] = face
    photo[60:200, 300:440] = cv2.resize(face, (140, 140))
    return photo


def test_restores_without_the_dataset_and_explains_every_face_largest_first(predictor):
    rows = predictor.predict(two_faces())
    assert [r.face for r in rows] == [0, 1] and all(r.status == "ok" for r in rows)
    (a, b) = (np.asarray(r.box) for r in rows)
    assert (a[2] - a[0]) > (b[2] - b[0]) and a[0] < b[0]         # larger (left) face first
    for r in rows:
        assert set(r.probabilities) == set(predictor.class_names)
        assert abs(sum(r.probabilities.values()) - 1.0) < 1e-4
        assert r.label == max(r.probabilities, key=r.probabilities.get)
        assert r.confidence == r.probabilities[r.label]
        assert r.landmarks.shape == (68, 2) and r.landmark_source == "dlib"
        s = predictor.image_size
        assert r.cam.shape == r.attention.shape == r.crop.shape[:2] == (s, s)
        if r.label == "Neutral":
            assert r.cam_cos is None and "no action units" in r.agreement_note
        else:
            assert r.au_map.shape == (s, s) and 0.0 <= r.cam_cos <= 1.0 and 0 <= r.att_cos <= 1
    again = predictor.predict(two_faces())
    assert [r.box for r in again] == [r.box for r in rows]       # a stable order


def test_cam_cos_is_the_cosine_of_the_cam_and_the_predicted_expressions_au_map(predictor):
    from data_prep import codebook, heatmaps
    r = predictor.predict(fx.face_crop("orig", 224, margin=0.6))[0]
    if r.au_map is None:
        pytest.skip(f"no AU map for the predicted class: {r.agreement_note}")
    a, b = r.cam.ravel().astype(np.float64), r.au_map.ravel().astype(np.float64)
    assert r.cam_cos == pytest.approx(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), abs=1e-5)
    # The AU map is the predicted class's, on this face's landmarks at the model's size.
    photo = faces.prepare_photo(fx.face_crop("orig", 224, margin=0.6), predictor.record_size)
    s = predictor.image_size
    points = (photo.faces[0].points + 0.5) * s / predictor.record_size - 0.5
    expected, valid = heatmaps.rasterise(points, codebook.EXPRESSIONS.index(r.label), (s, s))
    assert valid and np.array_equal(r.au_map, expected)


def test_neutral_predictions_get_no_invented_score(predictor):
    photo = faces.prepare_photo(fx.face_crop("orig", 224), predictor.record_size)
    face = photo.faces[0]
    probs = np.full(len(predictor.class_names), 0.01, np.float32)
    probs[0] = 1.0 - probs[1:].sum()
    s = predictor.image_size
    zeros = np.zeros((s, s), np.float32)
    r = predictor._result(photo, face, probs, 0, zeros, zeros, np.zeros((1, 4, 4, 8), np.float32))
    assert r.label == "Neutral" and r.cam_cos is None and r.att_cos is None and r.au_map is None
    assert r.agreement_note == "Neutral has no action units: no agreement score"


def write_bad_inputs(folder):
    os.makedirs(folder / "nested", exist_ok=True)
    astro = fx.astronaut()
    face = fx.face_crop("orig", 224, margin=0.6)
    cv2.imwrite(str(folder / "face.jpg"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 10)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("skipped: no image extension")
    cv2.imwrite(str(folder / "nested" / "grey.png"), cv2.cvtColor(face, cv2.COLOR_RGB2GRAY))
    Image.fromarray(face).convert("CMYK").save(folder / "nested" / "cmyk.jpg")
    cv2.imwrite(str(folder / "nested" / "rgba.png"),
                cv2.cvtColor(np.dstack([face, np.full(face.shape[:2], 255, np.uint8)]),
                             cv2.COLOR_RGBA2BGRA))
    cv2.imwrite(str(folder / "nested" / "deep16.png"),
                cv2.cvtColor(face, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    huge = cv2.resize(astro, (5000, 5000), interpolation=cv2.INTER_LINEAR)   # 25 Mpx > 16 Mpx
    cv2.imwrite(str(folder / "huge.jpg"), cv2.cvtColor(huge, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "tiny.png"), np.full((6, 5, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "wall.png"), np.full((200, 300, 3), 128, np.uint8))


def test_cli_gives_every_bad_file_a_row_and_carries_on(run_without_data, tmp_path):
    photos = tmp_path / "photos"
    write_bad_inputs(photos)
    out = tmp_path / "out"
    cmd = subprocess_runs.command("fer_jax.predict", f"--workdir={run_without_data}",
                       f"--images={photos}", f"--output={out}", "--workers=2", "--batch_size=4")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 1                    # some files could not be read
    assert subprocess_runs.NO_TENSORFLOW in done.stdout, done.stdout[-3000:]
    rows = [json.loads(line) for line in open(out / "predictions.jsonl")]
    by_file = {}
    for row in rows:
        by_file.setdefault(os.path.relpath(row["path"], photos), []).append(row)
    status = {k: {r["status"] for r in v} for k, v in by_file.items()}
    assert status == {
        "face.jpg": {"ok"}, "huge.jpg": {"ok"}, "nested/grey.png": {"ok"},
        "nested/cmyk.jpg": {"ok"}, "nested/rgba.png": {"ok"}, "nested/deep16.png": {"ok"},
        "corrupt.jpg": {"unreadable"}, "empty.png": {"unreadable"}, "text.jpg": {"unreadable"},
        "tiny.png": {"no_face"}, "wall.png": {"no_face"}}, status
    for name in ("corrupt.jpg", "empty.png", "text.jpg"):
        assert name in by_file[name][0]["reason"]
    assert "no face found" in by_file["wall.png"][0]["reason"]
    # A huge photo is decoded reduced, but its box is in the file's own pixels.
    assert max(by_file["huge.jpg"][0]["box"]) > 1000
    with open(out / "predictions.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert list(table[0])[:8] == ["path", "face", "status", "reason", "x0", "y0", "x1", "y1"]
    assert {f"p_{c}" for c in ("Neutral", "Happiness", "Sadness")} <= set(table[0])
    pictures = sorted(os.listdir(out / "pictures"))
    assert "face.jpg.png" in pictures and "nested__grey.png.png" in pictures
    assert "wall.png.png" not in pictures
    assert "1 files without an image extension not read" in done.stdout


def test_no_detect_classifies_whole_images(predictor, run_without_data):
    wall = np.full((64, 64, 3), 128, np.uint8)
    assert predictor.predict(wall)[0].status == "no_face"
    whole = predict.Predictor.from_workdir(str(run_without_data), detect=False, batch_size=2)
    rows = whole.predict(wall)
    assert len(rows) == 1 and rows[0].status == "ok" and rows[0].box is None
    assert rows[0].landmark_source in ("fallback_box", "failed")


def test_a_converted_weights_file_predicts_like_its_run(predictor, tmp_path):
    path = str(tmp_path / "w.npz")
    weights.save(predictor.variables, path, "resnet18")
    other = predict.Predictor.from_weights(path, image_size=predictor.image_size, batch_size=4,
                                          large_maps=True)
    photo = fx.face_crop("orig", 224, margin=0.6)
    a, b = predictor.predict(photo)[0], other.predict(photo)[0]
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
    assert other.class_names == predictor.class_names


# --- the shipped model (fer_jax/pretrained): no run, no training --------------------------

def test_without_workdir_or_weights_the_shipped_model_is_loaded():
    assert predict.model_workdir(None, None) == pretrained.path(pretrained.DEFAULT)
    assert predict.model_workdir("runs/x", None) == "runs/x"
    assert predict.model_workdir(None, "w.npz") is None
    with pytest.raises(errors.ConfigError, match="at most one of"):
        predict.model_workdir("runs/x", "w.npz")


def test_config_overrides_reach_the_restored_model_and_bad_ones_are_named(tmp_path):
    """predict's --config.KEY=VALUE (the dialect of main/evaluate) change the run's config
    before the model is built; a bad key or value is refused naming it, before any work."""
    import jax.numpy as jnp
    from fer_jax import runs
    restored = runs.restore(pretrained.path(), {"model.dtype": "bfloat16"})
    assert restored.config.model.dtype == "bfloat16" and restored.model.dtype == jnp.bfloat16
    assert runs.restore(pretrained.path()).model.dtype == jnp.float32
    with pytest.raises(errors.ConfigError, match="must be one of \\['float32', 'bfloat16'\\]"):
        runs.restore(pretrained.path(), {"model.dtype": "float8"})
    cmd = [sys.executable, "-m", "fer_jax.predict", f"--images={tmp_path}",
           f"--output={tmp_path / 'out'}", "--config.model.dtyp=bfloat16"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "error: --config.model.dtyp: unknown key 'dtyp' in model; valid: [")
    assert not (tmp_path / "out").exists()


def test_shipped_model_explains_a_smile_on_its_own_tight_grey_crop():
    """The FER2013 mini-Xception on the astronaut (clearly smiling): what it says, and the AU
    map rasterised on the landmark crop it reads (rebuilt here from the file landmarks)."""
    shipped = predict.Predictor.default(batch_size=4)
    assert shipped.input_rule.crop == faces.LANDMARKS_CROP and shipped.input_rule.grey
    (row,) = shipped.predict(fx.astronaut())
    print(f"shipped model on the astronaut: {row.label} {row.confidence:.3f}")
    assert row.status == "ok" and row.landmark_source == "dlib"
    assert row.label == "Happiness"    # measured: 0.998
    assert row.crop.shape == (64, 64, 3) and row.cam.shape == row.attention.shape == (64, 64)
    _, transform = faces.crop_resize(fx.astronaut(), faces.landmark_box(row.landmarks), 64)
    au_map, valid = heatmaps.rasterise(transform.points(row.landmarks),
                                       codebook.EXPRESSIONS.index("Happiness"), (64, 64))
    assert valid
    np.testing.assert_allclose(row.au_map, au_map, atol=1e-5)
    assert row.cam_cos is not None and 0.0 <= row.cam_cos <= 1.0 and row.att_cos is not None


def test_cli_runs_the_shipped_model_with_no_run_given(tmp_path):
    photos = tmp_path / "photos"
    fx.write_image(str(photos / "face.png"), fx.face_crop("orig", 200, margin=0.6))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fer_jax.predict", f"--images={photos}", f"--output={out}",
           "--workers=1", "--batch_size=4"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = [json.loads(line) for line in open(out / "predictions.jsonl")]
    assert row["status"] == "ok" and set(row["probabilities"]) == set(codebook.EXPRESSIONS[:7])
    assert os.listdir(out / "pictures") == ["face.png.png"]
