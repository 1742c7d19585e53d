"""`python -m fer_jax.main --config=configs/default.py --workdir=DIR`.

Reads the config file (overrides: --config.align.weight=0), then trains,
evaluates and writes results.json, checkpoints, TensorBoard logs and pictures
to the workdir.
"""
from absl import app, flags, logging
import jax
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where checkpoints, logs, results.json and plots go.")
config_flags.DEFINE_config_file("config", None, "Config file (see configs/).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Only process 0 talks; the others log warnings and errors only.
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)
    logging.info("JAX devices: %s", jax.devices())
    from fer_jax import train  # after flag parsing: keeps --help fast
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
