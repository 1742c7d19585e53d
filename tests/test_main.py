"""fer_jax.main's multi-host switch: when jax.distributed is initialised.

(The initialisation itself runs in test_multiprocess.py.)
"""
import os
import subprocess
import sys

from fer_jax import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM_JOB_OF_4_TASKS = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]",
                        "SLURM_NTASKS": "4", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}


def test_processes_are_counted_where_jax_detects_a_cluster(monkeypatch):
    for key in SLURM_JOB_OF_4_TASKS:
        monkeypatch.delenv(key, raising=False)
    assert main._detected_processes() == 1  # this machine: no cluster
    for key, value in SLURM_JOB_OF_4_TASKS.items():
        monkeypatch.setenv(key, value)
    assert main._detected_processes() == 4


def test_nodistributed_with_explicit_cluster_flags_fails_naming_them(tmp_path):
    cmd = [sys.executable, "-m", "fer_jax.main", "--config=configs/default.py",
           f"--workdir={tmp_path}", "--nodistributed", "--num_processes=2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "--nodistributed contradicts --num_processes" in out.stderr
    assert not os.listdir(tmp_path)
