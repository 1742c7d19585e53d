"""Several processes act as one program (jax.distributed, coordinator on 127.0.0.1, gloo
collectives on CPU): 2 processes x 4 devices train and evaluate as 1 process x 8 devices
(the session's shared tiny run), from built records without loading TensorFlow."""
import glob
import os

import numpy as np
import pytest

import conftest
import subprocess_runs as runs

# Per-step losses and results.json numbers agree to ~1e-7 relative (measured): the only
# difference is the order in which the devices' partial sums are added (8 in one process
# against 2 x 4 through gloo across processes), which changes the last bits of float32
# sums and, after a few SGD steps, of the parameters.
TOLERANCE = dict(rtol=1e-5, atol=1e-6)
# Deletion / insertion rank pixels by the map: last-bit differences reorder near-tied
# pixels, so a few different pixels are removed at a step (measured: 8e-6 on an AUC, 2e-6
# on the half-width of its confidence interval).
RANKED = ("deletion_auc", "insertion_auc", "deletion_auc_ci95", "insertion_auc_ci95")
RANKED_TOLERANCE = dict(rtol=0, atol=1e-4)
# Three CAM methods keep the evaluation's compilation short; `random` is seeded per
# example, which several processes must reproduce.
METHODS = ("cam", "gradcam", "random")


def assert_close_scores(got, expected):
    assert got.keys() == expected.keys()
    for key in expected:
        if isinstance(expected[key], dict):
            assert_close_scores(got[key], expected[key])
        else:
            np.testing.assert_allclose(got[key], expected[key], err_msg=key,
                                       **(RANKED_TOLERANCE if key in RANKED else TOLERANCE))


def flags(data_dir, workdir, spmd):
    """fer_jax.main flags for the shared run's config (conftest.make_tiny_config), on
    METHODS and either backend."""
    config = conftest.make_tiny_config(data_dir)
    config.spmd = spmd
    config.eval.cam_methods = METHODS
    config.eval.num_plot_images = 2
    path = runs.config_file(config, os.path.join(os.path.dirname(workdir), "config.py"))
    return [f"--config={path}", f"--workdir={workdir}"]


@pytest.fixture(scope="module")
def one_process(trained_run):
    """The reference: the session's shared run (`trained_run`), 1 process x 8 devices (pmap),
    the same config, every step logged; its scores restricted to the methods run here."""
    workdir, _ = trained_run
    scores = runs.scores(str(workdir))
    scores["cams"] = {m: scores["cams"][m] for m in METHODS}
    return {"scalars": runs.scalars(str(workdir)), "scores": scores}


@pytest.mark.parametrize("spmd,preempt", [(False, False), (True, True)],
                         ids=["pmap", "shard_map_preempted"])
def test_two_processes_of_four_devices_train_as_one_process_of_eight(
        tiny_data_dir, tmp_path, one_process, spmd, preempt):
    """Same data per step, same per-step losses, same results; process 0 alone writes.

    Either backend against the pmap reference (the backends agree to ~1e-7,
    test_train_step.py). In the shard_map case process 1 alone gets SIGTERM at
    step 3: both processes save the same step (JAX's preemption sync point), exit
    with status 75, and the restarted pair finishes as if nothing had happened.
    """
    two = tmp_path / "two"

    def start_pair(interrupt_process_1=False):
        port = runs.free_port()
        return [runs.start(
            flags(tiny_data_dir, two, spmd) + [f"--coordinator_address=127.0.0.1:{port}",
                                               "--num_processes=2", f"--process_id={i}"],
            runs.env(4, **({"INTERRUPT_AT_STEP": "3", "INTERRUPT_SIGNAL": "TERM",
                             "INTERRUPT_THEN_PAUSE": "2"}
                           if i == 1 and interrupt_process_1 else {})),
            interrupt=interrupt_process_1) for i in (0, 1)]

    pair = runs.finish(start_pair(interrupt_process_1=preempt))
    if preempt:
        assert [s for s, _ in pair] == [75, 75], runs.tail(pair)
        saved = sorted(int(d) for d in os.listdir(two / "checkpoints") if d.isdigit())
        # JAX's preemption sync manager picks the step both processes stop at, some steps
        # after the signal; in a loaded run it was the last one (7): then the restart has
        # only the evaluation left. Either way it must finish as the uninterrupted run.
        assert saved and 3 <= saved[-1] <= 7
        assert f"preempted (SIGTERM): stopped at step {saved[-1]} of 7" in pair[0][1]
        assert not (two / "results.json").exists()
        pair = runs.finish(start_pair())
        assert f"Resumed from checkpoint at step {saved[-1]} of 7." in pair[0][1], runs.tail(pair)
    assert [s for s, _ in pair] == [0, 0], runs.tail(pair)
    assert all(runs.NO_TENSORFLOW in out for _, out in pair), runs.tail(pair)
    # Process 0 alone writes: one TensorBoard file per run, the pictures, the summary.
    runs_made = 2 if preempt else 1
    assert len(glob.glob(str(two / "tensorboard" / "events.*"))) == runs_made
    assert (two / "attention.png").exists()
    assert "Wrote " in pair[0][1] and "Wrote " not in pair[1][1]

    expected, got = one_process["scalars"], runs.scalars(str(two))
    for tag in ("train/loss", "train/ce", "train/align", "train/accuracy"):
        assert sorted(got[tag]) == sorted(expected[tag]) == list(range(1, 8)), tag
        np.testing.assert_allclose([got[tag][s] for s in range(1, 8)],
                                   [expected[tag][s] for s in range(1, 8)], err_msg=tag,
                                   **TOLERANCE)
    assert expected["train/align"][1] > 0
    scores = runs.scores(str(two))
    assert scores["num_examples"] == 56  # every test example once, over both processes
    assert_close_scores(scores, one_process["scores"])
