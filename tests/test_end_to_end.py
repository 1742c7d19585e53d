"""The real trainer and evaluator, for a few steps on tiny data: outputs, errors, real photos.

Resuming, preemption and several processes: test_resume.py, test_multiprocess.py.
"""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import subprocess_runs as runs
from fer_jax import cams, train
from fer_jax.config_schema import defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The default set ("paper"): the paper's maps that apply to a ResNet, then the references.
RESNET_METHODS = ["cam", "gradcam", "gradcam++", "layercam", "random", "centre"]


def check_outputs(workdir, results):
    on_disk = json.load(open(workdir / "results.json"))
    assert on_disk["num_examples"] == 56 == sum(map(sum, on_disk["confusion_matrix"]))
    assert on_disk["split"] == "test"
    names = ["Neutral", "Happiness", "Surprise", "Fear", "Anger", "Disgust", "Sadness"]
    assert list(on_disk["per_class_accuracy"]) == names
    assert 0.0 <= on_disk["accuracy"] <= 1.0
    assert set(on_disk["att_cos"]) >= {"stem", "stage1", "stage2", "stage3", "stage4"}
    assert all(0.0 <= v <= 1.0 for v in on_disk["att_cos"].values())
    # The paper's methods, with the four scores in range; deletion / insertion on every
    # example (56 < eval.faithfulness_examples), with their confidence intervals.
    assert on_disk["cam_methods"] == list(on_disk["cams"]) == RESNET_METHODS
    for method, scores in on_disk["cams"].items():
        assert set(scores) == {"cam_cos", "pointing", "deletion_auc", "insertion_auc",
                               "deletion_auc_ci95", "insertion_auc_ci95"}, method
        assert all(0.0 <= v <= 1.0 for v in scores.values()), (method, scores)
    assert on_disk["faithfulness"] == {"steps": 4, "examples": 56, "of": 56,
                                       "subset": "every example",
                                       "insertion_blur": defaults().eval.insertion_blur}
    assert on_disk["train"]["steps"] == 112 // 16
    assert on_disk["train"]["examples_per_second"] > 0
    assert on_disk["evaluation"]["seconds"] > 0
    assert results["accuracy"] == on_disk["accuracy"]
    pictures = ["attention.png", "confusion.png"] + [f"cams_{m}.png" for m in RESNET_METHODS]
    for picture in pictures:
        assert (workdir / picture).stat().st_size > 1000, picture
    report = (workdir / "report.md").read_text()
    assert all(f"| {m} |" in report for m in RESNET_METHODS if not cams.REGISTRY[m].reference)
    assert "| *random (reference)* |" in report
    run = json.load(open(workdir / "run.json"))
    assert run["class_names"] == names and run["cam_layer"] == "stage4"
    assert os.listdir(workdir / "tensorboard")
    assert "7" in os.listdir(workdir / "checkpoints")


def test_train_and_evaluate_writes_results_checkpoints_and_pictures(trained_run):
    check_outputs(*trained_run)


def _train_scalars(workdir):
    """{tag: {step: value}} of the train/ scalars in a run's TensorBoard events."""
    import tensorflow as tf
    out = {}
    for path in sorted((workdir / "tensorboard").iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.startswith("train/"):
                    out.setdefault(value.tag, {})[event.step] = float(
                        tf.make_ndarray(value.tensor))
    return out


def _saved_state(workdir, step):
    import orbax.checkpoint as ocp
    return ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "default")


def test_shard_map_backend_trains_and_evaluates_to_the_same_outputs(trained_run, tiny_config,
                                                                     tmp_path):
    """The same tiny run as the shared pmap run (`trained_run`), with config.spmd=True:
    the same files and saved steps; after its 7 steps the same parameters, BatchNorm
    statistics and optimiser state (relative 1e-5); the same logged training scalars at
    every step (loss, CE, alignment term, accuracy; relative 1e-5); the same predictions,
    hence accuracy and confusion matrix exactly, and ATT-COS / CAM scores within 1e-5 /
    1e-4. Both backends run the same per-device step on the same data, so only the order
    of float reductions may differ (on the 8 CPU devices of the suite the two runs were
    bitwise equal)."""
    pmap_dir, pmap_results = trained_run
    tiny_config.spmd = True
    results = train.train_and_evaluate(tiny_config, str(tmp_path))
    assert results["config"] == dict(pmap_results["config"], spmd=True)

    files = lambda d: sorted(p.name for p in d.iterdir())
    assert files(tmp_path) == files(pmap_dir)
    assert files(tmp_path / "checkpoints") == files(pmap_dir / "checkpoints")
    got, want = _saved_state(tmp_path, 7), _saved_state(pmap_dir, 7)
    paths = lambda tree: [jax.tree_util.keystr(k) for k, _ in
                          jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert paths(got) == paths(want) and int(got["step"]) == int(want["step"]) == 7
    for (key, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(key))

    got_scalars, want_scalars = _train_scalars(tmp_path), _train_scalars(pmap_dir)
    assert set(got_scalars) >= {"train/loss", "train/ce", "train/align", "train/accuracy"}
    assert got_scalars.keys() == want_scalars.keys()
    for tag, by_step in want_scalars.items():
        assert got_scalars[tag].keys() == by_step.keys() == set(range(1, 8)), tag
        for step, value in by_step.items():
            assert got_scalars[tag][step] == pytest.approx(value, rel=1e-5, abs=1e-6), (tag, step)

    on_disk = json.load(open(tmp_path / "results.json"))
    expected = json.load(open(pmap_dir / "results.json"))
    assert on_disk.keys() == expected.keys() and results["accuracy"] == on_disk["accuracy"]
    # Counts, accuracies, confusion matrix, methods, layers, options: exactly equal.
    for key in expected.keys() - {"att_cos", "cams", "train", "evaluation", "config"}:
        assert on_disk[key] == expected[key], key
    assert on_disk["num_examples"] == 56 and on_disk["confusion_matrix"]
    assert on_disk["att_cos"] == pytest.approx(expected["att_cos"], abs=1e-5)
    assert list(on_disk["cams"]) == list(expected["cams"]) and on_disk["cams"]
    for method, scores in expected["cams"].items():
        assert on_disk["cams"][method] == pytest.approx(scores, abs=1e-4), method
    assert on_disk["train"]["steps"] == on_disk["train"]["steps_this_run"] == 7


def evaluate_cli(*args, cwd=ROOT):
    return subprocess.run(runs.command("fer_jax.evaluate", *args), cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_evaluate_cli_reproduces_a_finished_run_and_selects_methods(trained_run, tmp_path):
    workdir, results = trained_run
    out = evaluate_cli(f"--workdir={workdir}", f"--output={tmp_path / 'all'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert runs.NO_TENSORFLOW in out.stdout, out.stdout[-3000:]   # built records, no TF
    again = json.load(open(tmp_path / "all" / "results.json"))
    assert again["accuracy"] == results["accuracy"]
    assert again["cams"] == results["cams"]          # every score of every method, exactly
    assert again["att_cos"] == results["att_cos"]
    assert again["checkpoint_step"] == 7
    assert "evaluate test" in out.stderr               # the progress bar
    out = evaluate_cli(f"--workdir={workdir}", f"--output={tmp_path / 'two'}",
                       "--config.eval.cam_methods=gradcam,layercam",
                       "--config.eval.cam_layers=stage3,stage4",
                       "--config.eval.faithfulness_steps=0", "--config.eval.num_plot_images=2")
    assert out.returncode == 0, out.stderr[-3000:]
    two = json.load(open(tmp_path / "two" / "results.json"))
    assert list(two["cams"]) == ["gradcam", "layercam"] and two["cam_layers"] == ["stage3",
                                                                                 "stage4"]
    assert set(two["cams"]["gradcam"]) == {"cam_cos", "pointing"}
    assert sorted(p.name for p in (tmp_path / "two").glob("cams_*.png")) == [
        "cams_gradcam.png", "cams_layercam.png"]


def test_evaluate_says_what_is_missing(trained_run, tmp_path):
    from fer_jax import evaluate
    from fer_jax.config_schema import ConfigError
    workdir, _ = trained_run
    with pytest.raises(FileNotFoundError, match="is not a fer_jax run.*python -m fer_jax.main"):
        evaluate.evaluate_run(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not built in .*python -m data_prep.build"):
        evaluate.evaluate_run(str(workdir), overrides={"dataset.data_dir": str(tmp_path / "no")})
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "run.json").write_text((workdir / "run.json").read_text())
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*copy/checkpoints"):
        evaluate.evaluate_run(str(tmp_path / "copy"))
    with pytest.raises(ConfigError, match="unknown layer 'stage9'"):
        evaluate.evaluate_run(str(workdir), overrides={"eval.cam_layers": ("stage9",)})


def test_evaluate_cli_ends_a_bad_value_with_one_line_not_a_traceback(trained_run):
    workdir, _ = trained_run
    out = evaluate_cli(f"--workdir={workdir}", "--config.eval.cam_methods=gradcam,grad_cam")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        "error: config.eval.cam_methods=('gradcam', 'grad_cam') names an unknown CAM method "
        "'grad_cam'")
    out = evaluate_cli(f"--workdir={workdir}", "--config.eval.cam_method=gradcam")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        "error: --config.eval.cam_method: unknown key 'cam_method' in eval; valid: ['aug_smooth'")


def test_unknown_align_layer_fails_listing_valid_layers(tiny_config, tmp_path):
    tiny_config.align.layers = ("stage5",)
    with pytest.raises(ValueError, match=r"unknown layer 'stage5'; valid layers: \['stem', "
                                         r"'stage1', 'stage2', 'stage3', 'stage4'\]"):
        train.train_and_evaluate(tiny_config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()   # failed before training


def test_image_folder_of_real_photos_builds_and_trains_to_results(tmp_path):
    """fer_jax.main builds a folder of real face photos itself and trains on it."""
    import fixtures_real as fx
    root = str(tmp_path / "faces")
    fx.write_image_folder(root)
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "fer_jax.main", "--config=configs/default.py",
           f"--workdir={workdir}", "--config.dataset.name=image_folder/112",
           f"--config.dataset.manual_dir={root}", f"--config.dataset.data_dir={tmp_path / 'data'}",
           "--config.dataset.image_size=64", "--config.model.width=4",
           "--config.train.batch_size=4", "--config.eval.batch_size=4",
           "--config.train.num_epochs=2", "--config.eval.num_plot_images=2",
           # The data path is under test here; two methods keep the evaluation short.
           "--config.eval.cam_methods=('cam','gradcam')", "--config.eval.faithfulness_steps=4"]
    env = dict(os.environ, XLA_FLAGS=runs.xla_flags(1))
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # A quiet console, dataset build included: no library warning (absl/glog lines such
    # as TFDS's "Variant folder ... has no dataset_info.json", Python warnings, TF's
    # cache warning) reaches the user.
    noise = [line for line in (out.stdout + out.stderr).splitlines()
             if re.match(r"[WEF]\d{4} |WARNING|.*Warning:|.*calling iterator", line)]
    assert not noise, noise
    results = json.load(open(workdir / "results.json"))
    report = json.load(open(tmp_path / "data" / "image_folder" / "112" / "1.0.0" /
                            "build_report.json"))
    assert results["num_examples"] == report["splits"]["test"]["examples"] > 0
    assert (workdir / "attention.png").exists()


def test_outputs_reach_a_url_workdir_through_a_local_folder(monkeypatch):
    """JSON and matplotlib write local files: with a gs:// workdir, what they write into
    a local folder is copied there (etils.epath's copy of the local file, here recorded
    instead of sent)."""
    from etils import epath

    def write(folder):
        path = os.path.join(folder, "confusion.png")
        with open(path, "wb") as f:  # fails unless folder is a local folder
            f.write(b"png")
        return [path]
    sent = {}

    def copy(self, dst, overwrite=False):
        sent[str(dst)] = self.read_bytes()
    monkeypatch.setattr(type(epath.Path("/")), "copy", copy)
    train._write_to("gs://bucket/fer_jax_run", write)
    assert sent == {"gs://bucket/fer_jax_run/confusion.png": b"png"}
