"""What every `python -m fer_jax.<tool>` does first with its command line."""
from typing import Sequence


def start(argv: Sequence[str]) -> None:
    """Rejects stray positional arguments (a usage error naming them) and logs warnings and
    errors only unless --verbosity is given: orbax and TFDS narrate every step at INFO."""
    from absl import app, flags, logging
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
