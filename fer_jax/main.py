"""`python -m fer_jax.main --config=configs/default.py --workdir=DIR`.

Reads the config file (overrides: --config.align.weight=0), then trains,
evaluates and writes results.json, checkpoints, TensorBoard logs and pictures
to the workdir.
"""
import os
import sys

# TensorFlow (input pipeline only) need not announce its CPU kernels.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where checkpoints, logs, results.json and plots go.")
config_flags.DEFINE_config_file("config", None, "Config file (see configs/).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Warnings and errors only unless --verbosity is given: orbax and TFDS log every
    # step of their work at INFO; progress, resume notice and scores are printed.
    # Processes other than 0 stay quiet in any case.
    if jax.process_index() != 0 or not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    logging.info("JAX devices: %s", jax.devices())
    from fer_jax import config_schema, train  # after flag parsing: keeps --help fast
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (config_schema.ConfigError, FileNotFoundError) as e:
        # A bad value or a missing dataset is the user's to fix: one line, no traceback.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
