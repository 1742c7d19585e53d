"""Helpers for tests that run fer_jax's command-line tools in subprocesses.

Training, evaluation and predict on built records never load TensorFlow (only building
records may): every tool run through `command` prints, as it exits, the TensorFlow
modules it loaded, and the tests that start them check `NO_TENSORFLOW` in the output
(the multi-process trainers, evaluate on a finished run, predict on a trained model).
"""
import glob
import json
import os
import socket
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERRUPT = os.path.join(ROOT, "tests", "interrupt.py")
# The suite's XLA options beside the device count (conftest.py sets both for the session;
# `env` gives them to subprocesses): the suite compiles hundreds of small programs and
# runs most of them a few times, so XLA:CPU's backend optimisation level 0 (LLVM without
# its optimisation passes) saves more compile time than it costs run time (measured:
# the training-time methods' tests 125 s -> 90 s). Runs compared bitwise compile alike.
SUITE_XLA_OPTIONS = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for `devices` simulated CPU devices and the suite's options."""
    return f"--xla_force_host_platform_device_count={devices} {SUITE_XLA_OPTIONS}"


# Runs a module as `python -m` would, then prints which TensorFlow modules it loaded.
_RUN_AND_LIST = """
import runpy, sys
module = sys.argv[1]
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
print("TENSORFLOW_MODULES", len(loaded), loaded[:5], flush=True)
sys.exit(code)
"""
NO_TENSORFLOW = "TENSORFLOW_MODULES 0 []"


def command(module: str, *flags: str) -> List[str]:
    """`python -m module *flags`, which also prints the TensorFlow modules it loaded as it
    exits (NO_TENSORFLOW when none)."""
    return [sys.executable, "-c", _RUN_AND_LIST, module, *flags]


def config_file(config, path: str) -> str:
    """Writes a config file (as configs/*.py) whose get_config() returns `config`; its path."""
    with open(path, "w") as f:
        f.write("import json\n\nimport ml_collections\n\n\ndef get_config():\n"
                f"    return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n")
    return str(path)


def env(devices: Optional[int] = None, **extra: str) -> Dict[str, str]:
    """This environment (its compilation cache included) with `devices` CPU devices
    (None: the test session's own XLA_FLAGS, so that programs compile identically)."""
    out = dict(os.environ, PYTHONPATH=ROOT)
    if devices is not None:
        out["XLA_FLAGS"] = xla_flags(devices)
    out.update(extra)
    return out


def start(flags: Sequence[str], environment: Dict[str, str], interrupt: bool = False
          ) -> subprocess.Popen:
    """Starts fer_jax.main through `command` (or tests/interrupt.py, which wraps it and
    lists nothing) with `flags`."""
    cmd = [sys.executable, INTERRUPT, *flags] if interrupt else command("fer_jax.main", *flags)
    return subprocess.Popen(cmd, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(procs: Sequence[subprocess.Popen], timeout: float = 400) -> List[Tuple[int, str]]:
    """Waits for every process; kills them all if one hangs. Returns (status, output) each."""
    out = []
    try:
        for p in procs:
            text, _ = p.communicate(timeout=timeout)
            out.append((p.returncode, text))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return out


def tail(outputs: Sequence[Tuple[int, str]], lines: int = 40) -> str:
    """The last lines of each process's output (status first), for assertion messages."""
    return "\n".join(
        f"--- exit status {status}:\n" + "\n".join(
            [ln for ln in text.splitlines() if "[Gloo]" not in ln][-lines:])
        for status, text in outputs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scalars(workdir: str) -> Dict[str, Dict[int, float]]:
    """TensorBoard scalars of a run, {tag: {step: value}}; a rewritten step keeps its last value."""
    import tensorflow as tf
    out: Dict[str, Dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = float(tf.make_ndarray(v.tensor))
    return out


def scores(workdir: str) -> Dict[str, object]:
    """The evaluation numbers of results.json (what a repeated run must reproduce)."""
    with open(os.path.join(workdir, "results.json")) as f:
        r = json.load(f)
    return {k: r[k] for k in ("num_examples", "accuracy", "mean_class_accuracy",
                              "per_class_accuracy", "confusion_matrix", "att_cos", "cams")}
