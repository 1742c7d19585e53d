"""Training, evaluation and predict on built records never load TensorFlow: each CLI runs
in a subprocess whose modules are listed when it exits (only building records may use it)."""
import os
import subprocess
import sys

import cv2

import subprocess_runs as runs
from fer_jax import datasets

# Runs a module as `python -m` would, then prints which TensorFlow modules it loaded.
RUN_AND_LIST = """
import runpy, sys
module = sys.argv[1]
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
print("TENSORFLOW_MODULES", len(loaded), loaded[:5])
sys.exit(code)
"""


def run_listing(module, *flags):
    proc = subprocess.run([sys.executable, "-c", RUN_AND_LIST, module, *flags], cwd=runs.ROOT,
                          env=runs.env(2), capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "TENSORFLOW_MODULES 0 []" in out, out[-3000:]


def test_main_evaluate_and_predict_never_import_tensorflow(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    # One step of 16 (of 7 per epoch), one CAM method: what is read, not what is learnt.
    run_listing("fer_jax.main", *runs.tiny_flags(
        tiny_data_dir, workdir, "--config.train.num_epochs=0.1",
        "--config.eval.cam_methods=('cam',)", "--config.eval.faithfulness_steps=0",
        "--config.eval.num_plot_images=2"))
    assert os.path.isfile(os.path.join(workdir, "results.json"))
    run_listing("fer_jax.evaluate", f"--workdir={workdir}", f"--output={tmp_path / 'eval'}",
                "--cam_methods=cam")
    assert os.path.isfile(tmp_path / "eval" / "results.json")
    photos = tmp_path / "photos"
    photos.mkdir()
    source = datasets.find("synthetic_faces/tiny", tiny_data_dir).split_source("test")
    for i in range(2):
        rgb = datasets.decode(source[i])["image"]
        cv2.imwrite(str(photos / f"face{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    run_listing("fer_jax.predict", f"--workdir={workdir}", f"--images={photos}",
                f"--output={tmp_path / 'predict'}", "--no_detect", "--cam=cam", "--workers=1")
    assert os.path.isfile(tmp_path / "predict" / "predictions.jsonl")
