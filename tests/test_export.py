"""fer_jax.export and fer_jax.serving: the shipped model as a jax.export artifact that runs
with jax and NumPy alone and says what the live model says."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fixtures_real as fx
from data_prep import faces
from fer_jax import cams, errors, export, pretrained, runs, serving

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("gradcam++", "layercam")
BATCHES = (1, 3, 17)
# What a server must not need (the issue): the training stack and fer_jax beyond serving.
FORBIDDEN = ("flax", "optax", "orbax", "tensorflow", "tensorflow_datasets", "ml_collections",
             "data_prep")

SERVE = """
import json, sys
import numpy as np
from fer_jax import serving
model = serving.load(sys.argv[1])
x = np.load(sys.argv[2])
out = {}
for b in (1, 3, 17):
    probabilities, maps = model(x[:b])
    out[f"p{b}"] = probabilities
    out.update({f"{m}{b}": v for m, v in maps.items()})
np.savez(sys.argv[3], **out)
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def restored():
    return runs.restore(pretrained.path())


@pytest.fixture(scope="module")
def exported_dir(restored, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    export.export_model(restored, str(out), METHODS)
    return out


@pytest.fixture(scope="module")
def inputs(restored):
    """17 model inputs: the astronaut's grey landmark crop, plus noise on all but the first."""
    s = restored.config.dataset.image_size
    crop = faces.crop_resize(fx.astronaut(), faces.landmark_box(fx.astronaut_landmarks()), s)[0]
    x = faces.model_input(crop, s, restored.input_rule)
    noise = np.random.RandomState(0).normal(0, 0.3, (17, s, s, 3)).astype(np.float32)
    noise[0] = 0
    return x[None] + noise


@pytest.fixture(scope="module")
def expected(restored, inputs):
    """The live model on the 17 inputs: its softmax, and the engine's maps of its argmax
    (cams.explain). Each face's outputs are its own (eval-mode BatchNorm, per-face maps), so
    the first b rows are what any batch of the first b faces must give."""
    model, variables = restored.model, restored.variables
    spec = cams.spec_for(model, METHODS)

    @jax.jit
    def run(x):
        logits = model.apply(variables, x, train=False)
        maps = cams.explain(model, variables, x, jnp.argmax(logits, -1), spec).maps
        return jax.nn.softmax(logits.astype(jnp.float32), -1), maps

    return jax.device_get(run(inputs))


def test_loaded_artifact_needs_only_jax_and_matches_the_live_model_at_batch_sizes_1_3_17(
        restored, exported_dir, inputs, expected, tmp_path):
    np.save(tmp_path / "x.npy", inputs)
    served = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(exported_dir), str(tmp_path / "x.npy"),
         str(tmp_path / "out.npz")], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = served.communicate(timeout=300)
    assert served.returncode == 0, stderr[-3000:]
    modules = json.loads(stdout.strip().splitlines()[-1])
    assert [m for m in modules if m.split(".")[0] in FORBIDDEN] == []
    assert [m for m in modules if m.split(".")[0] == "fer_jax"] == ["fer_jax", "fer_jax.serving"]
    got = np.load(tmp_path / "out.npz")
    probabilities, maps = expected
    for b in BATCHES:
        assert got[f"p{b}"].shape == (b, len(restored.class_names))
        np.testing.assert_allclose(got[f"p{b}"], probabilities[:b], atol=1e-5, rtol=0)
        for m in METHODS:
            assert got[f"{m}{b}"].shape == (b, 64, 64)
            np.testing.assert_allclose(got[f"{m}{b}"], maps[m][:b], atol=1e-5, rtol=0)
    # The maps explain something: not flat, and the two methods differ.
    assert np.ptp(got["gradcam++17"]) > 0.5
    assert not np.allclose(got["gradcam++17"], got["layercam17"], atol=1e-3)


def test_contract_states_the_input_rule_classes_codebook_and_output_shapes(
        restored, exported_dir):
    info = json.load(open(exported_dir / serving.CONTRACT))
    run = json.load(open(os.path.join(pretrained.path(), runs.RUN_JSON)))
    assert info["class_names"] == run["class_names"]
    rule = info["input"]
    assert {k: rule[k] for k in ("crop", "grey", "mean", "std")} == run["input"]
    assert (rule["image_size"], rule["crop_size"], rule["channels"]) == (64, 64, 3)
    assert info["au_codebook"]["class_aus"]["Happiness"] == [6, 12, 25]   # docs/method.md
    assert info["au_codebook"]["class_aus"]["Neutral"] == []
    assert info["fer_jax_version"] == runs.version() and info["platforms"] == ["cpu", "cuda"]
    maps = info["outputs"]["maps"]
    assert maps["methods"] == list(METHODS) and maps["layers"] == [restored.model.cam_layer]
    # The shapes the artifact itself declares: symbolic batch, then the contract's sizes.
    artifact = jax.export.deserialize(bytearray(open(exported_dir / serving.ARTIFACT, "rb").read()))
    (x,) = artifact.in_avals
    assert str(x.shape[0]) == "b" and x.shape[1:] == (64, 64, 3) and x.dtype == np.float32
    assert [a.shape[1:] for a in artifact.out_avals] == [(7,), (64, 64), (64, 64)]
    assert all(str(a.shape[0]) == "b" for a in artifact.out_avals)


def test_serving_normalises_crops_as_predict_does(exported_dir):
    model = serving.load(str(exported_dir))
    crops = np.stack([fx.face_crop(kind, 64) for kind in ("orig", "flip")])
    rule = faces.InputRule.from_json(model.contract["input"])
    expected = np.stack([faces.model_input(c, 64, rule) for c in crops])
    np.testing.assert_allclose(model.normalise(crops), expected, atol=1e-6)


def test_serving_rejects_wrong_shapes_and_folders_that_are_not_exports(exported_dir, tmp_path):
    model = serving.load(str(exported_dir))
    with pytest.raises(ValueError, match=r"expected \(B, 64, 64, 3\)"):
        model(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="not an exported fer_jax model"):
        serving.load(str(tmp_path))


def test_default_methods_are_the_papers_gradient_methods_and_unknown_ones_fail(restored):
    assert export.default_methods(restored.model) == ("gradcam", "gradcam++", "layercam")
    with pytest.raises(errors.ConfigError, match="nope"):
        export.inference_function(restored, ("nope",))


def test_score_cam_needs_a_fixed_batch_which_the_artifact_and_loader_then_enforce(
        restored, tmp_path):
    with pytest.raises(errors.ConfigError, match="fixed --batch_size"):
        export.export_model(restored, str(tmp_path / "any"), ("scorecam",))
    info = export.export_model(restored, str(tmp_path / "two"), ("gradcam", "scorecam"),
                               platforms=("cpu",), batch_size=2)
    assert info["input"]["shape"] == [2, 64, 64, 3] and info["outputs"]["maps"]["shape"][0] == 2
    model = serving.load(str(tmp_path / "two"))
    assert model.exported.in_avals[0].shape == (2, 64, 64, 3) and model.batch_size == 2
    with pytest.raises(ValueError, match=r"expected \(2, 64, 64, 3\)"):
        model(np.zeros((3, 64, 64, 3), np.float32))


def test_cli_exports_the_shipped_model_with_no_run_given(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fer_jax.export", f"--output={tmp_path}",
                           "--platforms=cpu"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.load(open(tmp_path / serving.CONTRACT))
    assert info["outputs"]["maps"]["methods"] == ["gradcam", "gradcam++", "layercam"]
    assert info["source"] == f"fer_jax.pretrained/{pretrained.DEFAULT}"
    assert os.path.getsize(tmp_path / serving.ARTIFACT) > 0


def test_saved_model_matches_the_live_model_at_batch_sizes_1_3_17(restored, inputs, expected,
                                                                 tmp_path):
    tf = pytest.importorskip("tensorflow")
    function, _ = export.inference_function(restored, METHODS)
    export.write_saved_model(function, 64, str(tmp_path / export.SAVED_MODEL))
    serve = tf.saved_model.load(str(tmp_path / export.SAVED_MODEL)).signatures["serving_default"]
    probabilities, maps = expected
    for b in BATCHES:
        got = {k: v.numpy() for k, v in serve(images=tf.constant(inputs[:b])).items()}
        assert sorted(got) == sorted(("probabilities",) + METHODS)
        np.testing.assert_allclose(got["probabilities"], probabilities[:b], atol=1e-5, rtol=0)
        for m in METHODS:
            np.testing.assert_allclose(got[m], maps[m][:b], atol=1e-5, rtol=0)
