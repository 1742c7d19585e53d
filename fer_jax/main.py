"""`python -m fer_jax.main --config=configs/default.py --workdir=DIR`.

Reads the config file (overrides: --config.align.weight=0), then trains,
evaluates and writes results.json, checkpoints, TensorBoard logs and pictures
to the workdir.

Several hosts (a TPU pod slice, GPU nodes) run the same command once per host
and act as one program through `jax.distributed`: it is initialised first,
before anything asks JAX about devices,
- automatically where JAX detects a cluster of more than one process (Cloud
  TPU pod slices, SLURM, Open MPI);
- with `--distributed`, using JAX's detection for anything not given;
- with `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`
  on hand-made clusters.
`--nodistributed` never initialises it.

Exit status 75 (train.RESTART_EXIT_CODE): training stopped early with a
checkpoint saved (preempted by SIGTERM, or train.max_steps_per_run reached);
run the same command again to continue.
"""
import os
import sys
from typing import Any, Dict

# TensorFlow, loaded only to build a missing synthetic dataset (data_prep), need not
# announce its CPU kernels; reading records never loads it (fer_jax.input_pipeline).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where checkpoints, logs, results.json and plots go.")
config_flags.DEFINE_config_file("config", None, "Config file (see configs/).",
                                lock_config=True)
flags.DEFINE_bool("distributed", None,
                  "Initialise jax.distributed (one process per host). Unset: only where JAX "
                  "detects a multi-process cluster or the three flags below are given.")
flags.DEFINE_string("coordinator_address", None,
                    "HOST:PORT of process 0, reachable from every process.")
flags.DEFINE_integer("num_processes", None, "Number of processes of the job.", lower_bound=1)
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes-1.",
                     lower_bound=0)
flags.mark_flags_as_required(["config", "workdir"])

_EXPLICIT = ("coordinator_address", "num_processes", "process_id")


def _detected_processes() -> int:
    """Processes of the cluster JAX detects here (1 when none is detected)."""
    try:
        # JAX's own detection, as jax.distributed.initialize() uses it; the
        # module is private, hence guarded.
        from jax._src import clusters
        env = next((e for e in clusters.ClusterEnv._cluster_types
                    if not e.opt_in_only_method and e.is_env_present()), None)
        return env.get_process_count() if env is not None else 1
    except Exception as e:  # noqa: BLE001  a failed guess must not stop a local run
        logging.warning("Cluster detection failed (%s); running as one process.", e)
        return 1


def initialize_distributed() -> None:
    """Initialises jax.distributed when the flags or the environment ask for it.

    Must run before any device query: JAX fixes the device set at first use.
    """
    given: Dict[str, Any] = {k: FLAGS[k].value for k in _EXPLICIT if FLAGS[k].value is not None}
    if FLAGS.distributed is False:
        if given:
            raise app.UsageError(f"--nodistributed contradicts --{', --'.join(given)}")
        return
    if FLAGS.distributed is None and not given and _detected_processes() <= 1:
        return
    jax.distributed.initialize(**given)


def main(argv):
    from fer_jax import cli
    # Stray arguments fail; warnings and errors only unless --verbosity is given (orbax,
    # TFDS and JAX's backend probing log at INFO), set before JAX first starts a backend.
    cli.start(argv)
    initialize_distributed()
    # Progress, resume notice and scores are printed; processes other than 0 stay quiet.
    is_main = jax.process_index() == 0
    if not is_main:
        logging.set_verbosity(logging.WARNING)
    logging.info("JAX process %d of %d, devices: %s", jax.process_index(),
                 jax.process_count(), jax.devices())
    from fer_jax import train  # after flag parsing: keeps --help fast
    # A bad value or a missing dataset is the user's to fix: one line, no traceback.
    with cli.user_errors():
        try:
            train.train_and_evaluate(cli.config(), FLAGS.workdir)
        except train.TrainingIncomplete as e:
            if is_main:
                print(e, flush=True)
            sys.exit(train.RESTART_EXIT_CODE)


if __name__ == "__main__":
    from fer_jax import cli
    cli.run(main)
