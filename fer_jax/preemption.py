"""Preemption notices (SIGTERM) turned into a stop step that every process agrees on.

TPU VM maintenance, spot/preemptible reclaim and most schedulers send SIGTERM,
then SIGKILL after a grace period. The training loop asks `Watch.reached(step)`
after every step and, when it says True, saves a checkpoint and stops.
- With `jax.distributed` initialised, JAX's preemption sync manager receives
  the signal (on any process) and picks a step that all processes reach
  together: they all save the same step, as orbax's collective save requires.
- In a single process, a Python SIGTERM handler sets a flag.
"""
import signal
import threading
from typing import Any, Optional

from absl import logging
import jax


class Watch:
    """Context manager: while inside, SIGTERM asks training to stop at a clean step."""

    def __init__(self) -> None:
        self._requested = False
        self._previous: Optional[Any] = None
        self._installed = False

    def __enter__(self) -> "Watch":
        if jax.distributed.is_initialized():
            return self  # JAX's own notifier listens to SIGTERM (see reached)
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        else:  # signal handlers can only be set from the main thread
            logging.warning("Training outside the main thread: SIGTERM will not save a "
                            "checkpoint before the process stops.")
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def _on_sigterm(self, signum, frame) -> None:
        del signum, frame
        self._requested = True

    def reached(self, step: int) -> bool:
        """True at the step where every process should save and stop.

        Call it once per step on every process, with the same step numbers.
        """
        if jax.distributed.is_initialized():
            from jax.experimental import multihost_utils
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested
