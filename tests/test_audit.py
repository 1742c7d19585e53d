"""fer_jax.audit: the shipped model scored on a folder of real labelled photos.

The photos ship in installed wheels: scikit-image's astronaut (a clear smile, labelled
Happiness) and matplotlib's Grace Hopper (labelled Neutral here: the tests only assert
the mechanics of a face without an AU map, nothing about the model's answer).
"""
import json
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fixtures_real as fx
from data_prep import codebook, faces, heatmaps
from fer_jax import audit, cams, pretrained, runs

STEPS = 4   # deletion / insertion steps: few, the test recomputes them by hand


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A labelled folder: scored faces, and every kind of file the audit must skip."""
    root = tmp_path_factory.mktemp("labelled")
    astro = fx.astronaut()
    fx.write_image(str(root / "Happiness" / "astronaut.png"), astro)
    fx.write_image(str(root / "happiness" / "astronaut_flipped.jpg"), astro[:, ::-1])
    fx.write_image(str(root / "HAPPINESS" / "astronaut_crop.png"),
                   fx.face_crop("orig", 200, margin=0.6))
    fx.write_image(str(root / "Neutral" / "grace_hopper.jpg"), grace_hopper())
    fx.write_image(str(root / "Surprise" / "flat.png"), np.full((120, 120, 3), 128, np.uint8))
    two = np.concatenate([astro, astro[:, ::-1]], axis=1)
    fx.write_image(str(root / "Happiness" / "two_faces.jpg"), cv2.resize(two, (512, 256)))
    fx.write_image(str(root / "loose.png"), astro)                    # no class folder
    fx.write_image(str(root / "Smirk" / "astronaut.png"), astro)     # not a class
    (root / "Happiness" / "notes.txt").write_text("not a photo")
    return root


@pytest.fixture(scope="module")
def restored():
    return runs.restore(pretrained.path())


@pytest.fixture(scope="module")
def result(folder, restored):
    return audit.audit(restored, str(folder), steps=STEPS, draws=200, batch_size=4)


def test_every_file_is_scored_or_listed_with_its_reason(folder, result):
    c = result.results["counts"]
    assert (c["image_files"], c["non_image_files"], c["faces"], c["skipped"]) == (8, 1, 4, 4)
    assert c["faces_with_au_map"] == 3            # Neutral has no AUs
    reasons = {os.path.relpath(s["path"], folder): s["reason"]
               for s in result.results["skipped"]}
    assert set(reasons) == {"loose.png", os.path.join("Smirk", "astronaut.png"),
                            os.path.join("Surprise", "flat.png"),
                            os.path.join("Happiness", "two_faces.jpg")}
    assert "not in a class folder" in reasons["loose.png"]
    assert "'Smirk' is not a class" in reasons[os.path.join("Smirk", "astronaut.png")]
    assert reasons[os.path.join("Surprise", "flat.png")].startswith("no_face")
    assert reasons[os.path.join("Happiness", "two_faces.jpg")].startswith("2 faces")
    scored = sorted(os.path.relpath(f.path, folder) for f in result.faces)
    assert scored == sorted([os.path.join("HAPPINESS", "astronaut_crop.png"),
                             os.path.join("Happiness", "astronaut.png"),
                             os.path.join("Neutral", "grace_hopper.jpg"),
                             os.path.join("happiness", "astronaut_flipped.jpg")])
    assert {f.truth for f in result.faces} == {"Happiness", "Neutral"}


def test_accuracy_and_per_class_counts_are_those_of_the_rows(result):
    rows = result.results["faces"]
    correct = [r["truth"] == r["predicted"] for r in rows]
    assert result.results["accuracy"] == pytest.approx(sum(correct) / len(rows))
    happy = [r for r in rows if r["truth"] == "Happiness"]
    assert result.results["per_class"]["Happiness"]["photos"] == len(happy) == 3
    assert result.results["per_class"]["Happiness"]["correct"] == sum(
        r["predicted"] == "Happiness" for r in happy)
    low, high = result.results["accuracy_ci95"]
    assert 0.0 <= low <= result.results["accuracy"] <= high <= 1.0


def test_a_face_without_au_map_gets_no_plausibility_score_but_faithfulness(result):
    (grace,) = [f for f in result.faces if f.truth == "Neutral"]
    assert not grace.valid and "no action units" in grace.note
    for scores in grace.scores.values():
        assert scores["cam_cos"] is None and scores["pointing"] is None
        assert 0.0 <= scores["deletion_auc"] <= 1.0


def test_scores_equal_an_independent_computation_for_one_face(folder, restored, result):
    """CAM-COS, pointing and the deletion AUC of the astronaut's Grad-CAM, recomputed here
    from the photo: its landmark crop, the Happiness AU map on it, the model by hand."""
    (face,) = [f for f in result.faces if f.path.endswith(os.path.join("Happiness",
                                                                       "astronaut.png"))]
    photo = faces.prepare_photo(face.path, restored.record_size,
                                crop_rule=restored.input_rule.crop)
    (prepared,) = photo.faces
    s = int(restored.config.dataset.image_size)
    x = faces.model_input(prepared.crop, s, restored.input_rule)[None]
    happy = restored.class_names.index("Happiness")
    spec = cams.spec_for(restored.model, ("gradcam",))
    explain = jax.jit(lambda v, x: cams.explain(restored.model, v, x, jnp.array([happy]),
                                                spec).maps["gradcam"][0])
    cam = np.asarray(explain(restored.variables, jnp.asarray(x)))
    points = (prepared.points + 0.5) * s / prepared.crop.shape[0] - 0.5
    au_map, valid = heatmaps.rasterise(points, codebook.EXPRESSIONS.index("Happiness"), (s, s))
    assert valid
    np.testing.assert_allclose(face.au_map, au_map, atol=1e-6)
    np.testing.assert_allclose(face.maps["gradcam"], cam, atol=1e-5)
    scores = face.scores["gradcam"]
    cosine = float((cam * au_map).sum() / np.linalg.norm(cam) / np.linalg.norm(au_map))
    assert scores["cam_cos"] == pytest.approx(cosine, abs=1e-5)
    assert scores["pointing"] == float(au_map.flat[np.argmax(cam)] > 0.5)
    # Deletion: the top-ranked k/STEPS of the pixels set to 0 (the normalised mean), the
    # probability of Happiness after each step, trapezoid area.
    # Ranked by the audit's map (equal to `cam` above within 1e-5): the bilinear upsampling
    # of a 4x4 grid makes near-ties that float rounding may order either way.
    order = np.argsort(-face.maps["gradcam"].ravel(), kind="stable")
    images = []
    for k in range(STEPS + 1):
        keep = np.ones(s * s, bool)
        keep[order[:int(round(k * s * s / STEPS))]] = False
        images.append(x[0] * keep.reshape(s, s, 1))
    logits = jax.jit(lambda v, x: restored.model.apply(v, x, train=False))(
        restored.variables, jnp.asarray(np.stack(images)))
    probs = np.asarray(jax.nn.softmax(logits)[:, happy]).tolist()
    area = (sum(probs) - 0.5 * (probs[0] + probs[-1])) / STEPS
    assert scores["deletion_auc"] == pytest.approx(area, abs=1e-4)


def test_summaries_aggregate_the_rows_as_evaluate_does(result):
    rows = result.results["faces"]
    gradcam = result.results["cams"]["gradcam"]
    valid = [r["scores"]["gradcam"]["cam_cos"] for r in rows if r["au_map_valid"]]
    # One non-neutral class (Happiness): the paper's score is its mean.
    assert gradcam["cam_cos"] == pytest.approx(np.mean(valid), abs=1e-5)
    assert gradcam["deletion_auc"] == pytest.approx(
        np.mean([r["scores"]["gradcam"]["deletion_auc"] for r in rows]), abs=1e-5)
    assert set(result.results["cams"]) == set(audit.DEFAULT_CAMS)
    assert result.results["reference_methods"] == ["random", "centre"]


def test_outputs_state_what_was_scored(result, tmp_path):
    written = audit.write_outputs(result, str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == ["faces.png", "report.md",
                                                            "results.json"]
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["counts"] == result.results["counts"]
    text = open(tmp_path / "report.md").read()
    assert "4 faces scored" in text and "two_faces.jpg" in text and "2 faces" in text
    assert "*random (reference)*" in text and f"{STEPS} steps" in text
    assert cv2.imread(str(tmp_path / "faces.png")) is not None


@pytest.mark.parametrize("name,label", [
    ("0-f1-su-ph.jpg", "Surprise"), ("0-f15-hao-ph.jpg", "Happiness"),
    ("15-f13-anc-ph.jpg", "Anger"), ("45-m7-di-ph.jpg", "Disgust"),
    ("s1_fe.png", "Fear"), ("x-sa.png", "Sadness"), ("NE-01.jpg", "Neutral"),
    ("photo.jpg", None), ("1-su-ha.jpg", None)])
def test_file_name_codes_give_the_label_or_a_reason(name, label):
    got, why = audit.read_label(os.path.join("/d", name), "/d", audit.NAME)
    assert got == label
    assert bool(why) == (label is None)


def test_cli_writes_what_the_api_computes_and_a_bad_folder_is_named(folder, restored, result,
                                                                    tmp_path):
    """The command line on the same folder with the fixture's settings (whose compiled
    programs the session's JAX cache then holds); a missing folder is named."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "out"
    base = [sys.executable, "-m", "fer_jax.audit", f"--output={out}", "--workers=1",
            "--batch_size=4", f"--steps={STEPS}", "--bootstrap=200", "--no_pictures"]
    done = subprocess.run(base + [f"--images={folder}"], cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 faces scored (4 files skipped)" in done.stdout
    saved = json.load(open(out / "results.json"))
    assert saved["counts"] == result.results["counts"]
    assert saved["accuracy"] == pytest.approx(result.results["accuracy"])
    assert saved["cams"]["gradcam"]["cam_cos"] == pytest.approx(
        result.results["cams"]["gradcam"]["cam_cos"], abs=1e-5)
    assert sorted(os.listdir(out)) == ["report.md", "results.json"]
    with pytest.raises(FileNotFoundError, match="not a folder"):   # the CLI: one line, exit 2
        audit.audit(restored, str(tmp_path / "missing"))
