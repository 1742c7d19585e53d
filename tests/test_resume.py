"""Exact, preemption-proof resume: a run stopped every way an outage stops it ends with
the parameters and results.json numbers of the run that was never interrupted."""
import os
import random
import signal

import numpy as np
import orbax.checkpoint as ocp
import pytest

import interrupt
import subprocess_runs as runs
from fer_jax import input_pipeline, train


def committed(workdir):
    return sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())


def unfinished(workdir):
    return [d for d in os.listdir(workdir / "checkpoints") if "orbax-checkpoint-tmp" in d]


def saved_state(workdir, step):
    return ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "default")


def test_interrupted_run_ends_bitwise_as_the_uninterrupted_one(tiny_config, tmp_path,
                                                               monkeypatch):
    """14 steps, checkpoints every 5. One workdir is stopped five ways in turn, then finished:
    1. SIGTERM during step 3: a checkpoint of step 3 is saved and training stops;
    2. train.max_steps_per_run=3: steps 4-6 run, then it stops with a checkpoint of 6;
    3. SIGKILL while orbax writes the checkpoint of step 10: 6 stays the latest;
    4. SIGKILL at a random step between the checkpoints of 10 and 14;
    5. the last run resumes from 10 and finishes.
    Same data, dropout and arithmetic, hence bitwise equal on CPU (same devices, same
    compiled programs). Runs 3 and 4 are subprocesses (they are killed), the others
    run in this process; all see the 8 devices of the test session.
    """
    config = tiny_config
    config.train.num_epochs = 2
    config.train.checkpoint_every_steps = 5
    config.eval.num_plot_images = 0
    config.eval.cam_methods = ("cam", "gradcam", "random")   # short to compile, all compared
    expected = train.train_and_evaluate(config, str(tmp_path / "uninterrupted"))
    work = tmp_path / "interrupted"

    with monkeypatch.context() as m:
        m.setattr(input_pipeline, "train_batches", interrupt.signal_at_step(
            input_pipeline.train_batches, 2, signal.SIGTERM))
        with pytest.raises(train.TrainingIncomplete,
                           match=r"preempted \(SIGTERM\): stopped at step 3 of 14"):
            train.train_and_evaluate(config, str(work))
    assert committed(work) == [3] and not (work / "results.json").exists()

    config.train.max_steps_per_run = 3
    with pytest.raises(train.TrainingIncomplete, match=r"train.max_steps_per_run=3 steps done: "
                                                       r"stopped at step 6 of 14"):
        train.train_and_evaluate(config, str(work))
    assert committed(work) == [5, 6]
    config.train.max_steps_per_run = 0

    flags = [f"--config={runs.config_file(config, tmp_path / 'config.py')}", f"--workdir={work}"]
    (status, out), = runs.finish([runs.start(flags, runs.env(KILL_WHILE_SAVING="10"),
                                             interrupt=True)])
    assert status == -signal.SIGKILL, runs.tail([(status, out)])
    assert "Resumed from checkpoint at step 6 of 14." in out
    assert committed(work) == [5, 6] and unfinished(work)  # killed mid-save, uncommitted

    kill_at = random.randint(11, 13)
    (status, out), = runs.finish([runs.start(flags, runs.env(
        INTERRUPT_AT_STEP=str(kill_at), INTERRUPT_SIGNAL="KILL", INTERRUPT_AFTER_CHECKPOINT="10"),
        interrupt=True)])
    assert status == -signal.SIGKILL, f"kill at {kill_at}:\n" + runs.tail([(status, out)])
    assert "Resumed from checkpoint at step 6 of 14." in out  # the unfinished 10 was ignored
    # (The kill may land before orbax deletes the oldest checkpoint: 5 may remain.)
    assert committed(work)[-2:] == [6, 10] and not unfinished(work)

    results = train.train_and_evaluate(config, str(work))
    assert results["train"]["steps_this_run"] == 4
    got, want = saved_state(work, 14), saved_state(tmp_path / "uninterrupted", 14)
    assert got.keys() == want.keys()
    for a, b in zip(*(jax_leaves(t) for t in (got, want))):
        np.testing.assert_array_equal(a, b, err_msg=f"kill at {kill_at}")
    assert runs.scores(str(work)) == runs.scores(str(tmp_path / "uninterrupted"))
    assert results["accuracy"] == expected["accuracy"]

    # Started once more, the finished run only re-evaluates and keeps its training figures.
    again = train.train_and_evaluate(config, str(work))
    assert again["train"] == results["train"]
    assert runs.scores(str(work)) == runs.scores(str(tmp_path / "uninterrupted"))


def jax_leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree.leaves(tree)]
