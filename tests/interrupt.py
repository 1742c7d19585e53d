"""`python tests/interrupt.py FLAGS...`: fer_jax.main that interrupts itself as an outage would.

Tests only. The environment says how (all optional):
  INTERRUPT_AT_STEP=K, INTERRUPT_SIGNAL=KILL|TERM  send the signal to this process
      when the trainer asks for the batch of step K (steps before K are dispatched)
  INTERRUPT_AFTER_CHECKPOINT=C  first wait until checkpoint C is committed, so
      that the kill falls between checkpoints C and the next one
  INTERRUPT_THEN_PAUSE=S  after the signal, pause S seconds before each later batch:
      across processes, JAX's preemption notice reaches the other process and the
      stop step is agreed in background threads; on a loaded machine a short run
      could otherwise finish before they agree (the test then saw exit 0, not 75)
  KILL_WHILE_SAVING=S  SIGKILL inside orbax's save of step S, once its files are
      written and before the commit (the rename of its temporary directory)
"""
import os
import signal
import sys
import time
from typing import Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def signal_at_step(train_batches: Callable, step: int, signum: int,
                   after_checkpoint: Optional[str] = None, pause: float = 0.0) -> Callable:
    """`input_pipeline.train_batches` that sends `signum` to this process when the batch
    of `step` is asked for, once the checkpoint directory `after_checkpoint` exists,
    then sleeps `pause` seconds before each later batch."""
    def wrapped(builder, config, shard_ids, num_shards, start_step=0):
        batches = train_batches(builder, config, shard_ids, num_shards, start_step)
        for s, batch in enumerate(batches, start=start_step):
            if s == step:
                if after_checkpoint:
                    _wait_for(after_checkpoint)
                os.kill(os.getpid(), signum)
            elif s > step:
                time.sleep(pause)
            yield batch
    return wrapped


def _wait_for(path: str) -> None:
    deadline = time.time() + 120
    while not os.path.isdir(path):
        if time.time() > deadline:
            raise TimeoutError(f"checkpoint {path} never appeared")
        time.sleep(0.05)


def _kill_while_saving(step: int) -> None:
    from orbax.checkpoint._src.path import atomicity
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize_or_die(self):
        if self.get_final().name == str(step):
            os.kill(os.getpid(), signal.SIGKILL)
        return await finalize(self)
    atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die


if __name__ == "__main__":
    env = os.environ
    if "INTERRUPT_AT_STEP" in env:
        from fer_jax import input_pipeline
        workdir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir="))
        after = env.get("INTERRUPT_AFTER_CHECKPOINT")
        input_pipeline.train_batches = signal_at_step(
            input_pipeline.train_batches, int(env["INTERRUPT_AT_STEP"]),
            getattr(signal, "SIG" + env["INTERRUPT_SIGNAL"]),
            os.path.join(workdir, "checkpoints", after) if after else None,
            float(env.get("INTERRUPT_THEN_PAUSE", 0)))
    if "KILL_WHILE_SAVING" in env:
        _kill_while_saving(int(env["KILL_WHILE_SAVING"]))
    from absl import app
    from fer_jax import main
    app.run(main.main)
