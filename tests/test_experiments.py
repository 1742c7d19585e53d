"""experiments + tables end to end on a grid of the tiny config: shards, failures, skipping
finished cells, stopping at a cell that stops early, resuming it, and the table of what was
run.

The suite's finished tiny run (`trained_run`) stands in for work done by an earlier
invocation of the grid, so this test trains only what a resumed cell has left.
"""
import json
import os
import shutil

from fer_jax import experiments, grids, tables, train

CONFIG = """
import conftest


def get_config():
    return conftest.make_tiny_config({data_dir!r})   # what trained_run trained
"""


def test_grid_skips_finished_cells_resumes_interrupted_ones_and_tabulates(
        trained_run, tiny_data_dir, tmp_path):
    run_dir, run_results = trained_run
    config = tmp_path / "tiny.py"
    config.write_text(CONFIG.format(data_dir=tiny_data_dir))
    grid = grids.Grid("tiny", "paper_table", "tiny cells", (
        grids.Cell("with", str(config)),                                           # lambda 4
        # 2 epochs = 14 steps, of which the 7 of trained_run are done.
        grids.Cell("without", str(config), {
            "align.weight": 0.0, "train.num_epochs": 2.0, "eval.cam_methods": ("cam",),
            "eval.faithfulness_steps": 0, "eval.num_plot_images": 0}),
        grids.Cell("broken", str(config), {"align.wieght": 1.0}),                 # a typo
    ))
    out = tmp_path / "out"
    shutil.copytree(run_dir, out / "with")                         # finished earlier
    shutil.copytree(run_dir / "checkpoints" / "7", out / "without" / "checkpoints" / "7")
    finished_mtime = os.stat(out / "with" / "results.json").st_mtime_ns

    # Shard 2 of 3 is the broken cell alone: it fails and the others stay untouched.
    status = experiments.run_grid(grid, str(out), shard=(2, 3), progress=False)
    assert list(status) == ["broken"]
    assert status["broken"].startswith("failed: ConfigError: override align.wieght=1.0: unknown "
                                       "key 'wieght'; valid keys: ['layers', 'weight']")
    assert "wieght" in (out / "broken" / "error.txt").read_text()
    assert not (out / "without" / "results.json").exists()

    # A cell whose training stops early (here at its budget of 3 steps a run; SIGTERM takes
    # the same path) ends the grid, saying so: the cell after it does not start.
    status = experiments.run_grid(grid, str(out), shared_overrides={
        "train.max_steps_per_run": 3}, progress=False)
    assert status == {"with": "skipped", "without": status["without"]}
    assert status["without"].startswith(
        "stopped: train.max_steps_per_run=3 steps done: stopped at step 10 of 14")
    assert not (out / "without" / "error.txt").exists()
    assert not (out / "without" / "results.json").exists()
    assert experiments.RESTART_EXIT_CODE == train.RESTART_EXIT_CODE

    status = experiments.run_grid(grid, str(out), progress=False)
    assert status["with"] == "skipped" and status["without"] == "resumed"
    assert status["broken"].startswith("failed: ConfigError")
    assert os.stat(out / "with" / "results.json").st_mtime_ns == finished_mtime
    resumed = json.load(open(out / "without" / "results.json"))
    assert resumed["train"]["steps"] == 14 and resumed["train"]["steps_this_run"] == 4
    assert resumed["config"]["align"]["weight"] == 0.0 and resumed["cam_methods"] == ["cam"]
    record = json.load(open(out / "without" / "cell.json"))
    assert (record["grid"], record["position"], record["layout"]) == ("tiny", 1, "paper_table")

    # Once written, a cell's folder is not reused for another definition of it.
    changed = grids.Grid("tiny", "paper_table", "", (
        grids.Cell("without", str(config), {"align.weight": 1.0}),))
    refused = experiments.run_grid(changed, str(out), progress=False)["without"]
    assert "holds a cell with overrides=" in refused and "{'align.weight': 1.0}" in refused

    (out / "with" / "cell.json").write_text(json.dumps(experiments.cell_record(
        grid, grid.cells[0], 0, {})))   # what the earlier invocation would have written
    tables.write(str(out))
    text = (out / "table.md").read_text()

    def expected_row(method, without_map):
        """The table line of `method`: CL and ATT-COS of both models, its map's scores
        without AU from `without_map` (None: not evaluated there), with AU from the run."""
        au = run_results["cams"][method]
        pair = (lambda key: f"{without_map[key]:.3f} -> {au[key]:.3f}" if without_map else
                f"- -> {au[key]:.3f}")
        return (f"| {method} | {100 * resumed['accuracy']:.2f} -> "
                f"{100 * run_results['accuracy']:.2f} | {pair('cam_cos')} | "
                f"{resumed['att_cos']['stage4']:.3f} -> {run_results['att_cos']['stage4']:.3f} | "
                f"{pair('pointing')} | - -> {au['deletion_auc']:.3f} | "
                f"- -> {au['insertion_auc']:.3f} |")

    lines = text.splitlines()
    # The resumed cell evaluated CAM alone, without faithfulness.
    assert [ln for ln in lines if ln.startswith("| cam |")] == [
        expected_row("cam", resumed["cams"]["cam"])]
    # The other methods of the finished cell are rows too: the same two models (CL, ATT-COS),
    # and no map "without".
    assert [ln for ln in lines if ln.startswith("| gradcam |")] == [
        expected_row("gradcam", None)]
    assert "2 of 3 cells finished; missing: broken." in text
