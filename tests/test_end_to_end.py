"""The real trainer, for a few steps on tiny data: outputs, bad layer names, real photos.

Resuming, preemption and several processes: test_resume.py, test_multiprocess.py.
"""
import json
import os
import subprocess
import sys

import pytest

from fer_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("spmd", [False, True], ids=["pmap", "shard_map"])
def test_train_and_evaluate_writes_results_checkpoints_and_pictures(tiny_config, tmp_path, spmd):
    tiny_config.spmd = spmd
    results = train.train_and_evaluate(tiny_config, str(tmp_path))
    on_disk = json.load(open(tmp_path / "results.json"))
    assert on_disk["num_examples"] == 56 == sum(map(sum, on_disk["confusion_matrix"]))
    assert on_disk["split"] == "test"
    names = ["Neutral", "Happiness", "Surprise", "Fear", "Anger", "Disgust", "Sadness"]
    assert list(on_disk["per_class_accuracy"]) == names
    assert 0.0 <= on_disk["accuracy"] <= 1.0
    assert set(on_disk["att_cos"]) >= {"stem", "stage1", "stage2", "stage3", "stage4"}
    assert all(0.0 <= v <= 1.0 for v in on_disk["att_cos"].values())
    assert set(on_disk["cam_cos"]) == {"cam", "gradcam", "gradcam++", "layercam"}
    assert all(0.0 <= v <= 1.0 for v in on_disk["cam_cos"].values())
    assert on_disk["train"]["steps"] == 112 // 16
    assert on_disk["train"]["examples_per_second"] > 0
    assert results["accuracy"] == on_disk["accuracy"]
    for picture in ("attention.png", "confusion.png"):
        assert (tmp_path / picture).stat().st_size > 1000
    assert os.listdir(tmp_path / "tensorboard")
    assert "7" in os.listdir(tmp_path / "checkpoints")


def test_unknown_align_layer_fails_listing_valid_layers(tiny_config, tmp_path):
    tiny_config.align.layers = ("stage5",)
    with pytest.raises(ValueError, match=r"unknown layer 'stage5'; valid layers: \['stem', "
                                         r"'stage1', 'stage2', 'stage3', 'stage4'\]"):
        train.train_and_evaluate(tiny_config, str(tmp_path))


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
           "--config.train.num_epochs=2", "--config.eval.num_plot_images=2"]
    env = dict(os.environ, XLA_FLAGS="")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.load(open(workdir / "results.json"))
    report = json.load(open(tmp_path / "data" / "image_folder" / "112" / "1.0.0" /
                            "build_report.json"))
    assert results["num_examples"] == report["splits"]["test"]["examples"] > 0
    assert (workdir / "attention.png").exists()


def test_pictures_reach_a_url_workdir_through_a_local_folder(monkeypatch):
    """Matplotlib writes local files: with a gs:// (here ram://) workdir they are copied."""
    import tensorflow as tf
    from fer_jax import evaluate

    def write_pictures(model, state, builder, config, results, workdir):
        path = os.path.join(workdir, "confusion.png")
        with open(path, "wb") as f:  # fails unless workdir is a local folder
            f.write(b"png")
        return [path]
    monkeypatch.setattr(evaluate, "write_pictures", write_pictures)
    train._write_pictures(None, None, None, None, None, "ram://fer_jax_run")
    with tf.io.gfile.GFile("ram://fer_jax_run/confusion.png", "rb") as f:
        assert f.read() == b"png"
