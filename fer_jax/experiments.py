"""`python -m fer_jax.experiments --grid=NAME --out=DIR [--shard=i/n]`: run a grid of trainings.

Each cell of the grid (fer_jax.grids) trains and evaluates in its own workdir,
DIR/<cell>, through `train.train_and_evaluate`, one cell after the other in this
process. Before training, DIR/<cell>/cell.json records the cell (grid, layout,
config file, overrides, variant), which is what `python -m fer_jax.tables --out=DIR`
reads beside results.json.

- A rerun skips finished cells (results.json written, and one per extra split) and
  resumes interrupted ones from their latest checkpoint.
- A cell that fails is reported (traceback in DIR/<cell>/error.txt); the others run.
- A cell whose training stops early (preempted by SIGTERM, or train.max_steps_per_run
  reached) stops the grid with exit status 75, as fer_jax.main does: the machine is going
  away or the job's budget is spent, so no later cell should start. Rerun to resume.
- `--shard=i/n` runs only every n-th cell from position i (0-based), so n machines
  share a grid without talking to each other; copy their DIR/<cell> folders together
  for the tables.
- `--config.KEY=VALUE` (as in fer_jax.main and fer_jax.evaluate) applies to every
  cell, after the cell's own overrides: where a real dataset lies, pretrained weights.
"""
import dataclasses
import importlib.util
import json
import os
import sys
import time
import traceback
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from fer_jax import grids

CELL_JSON = "cell.json"
ERROR_TXT = "error.txt"
RESULTS = "results.json"   # as fer_jax.evaluate.RESULTS, without importing JAX for --help
RESTART_EXIT_CODE = 75     # as fer_jax.train.RESTART_EXIT_CODE, for the same reason
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def extra_split_dir(split: str) -> str:
    """Subfolder of a cell's workdir that holds its evaluation on `split`."""
    return f"eval_{split}"


def load_config(spec: str, overrides: Mapping[str, Any]):
    """The ConfigDict of config file `spec` with `overrides` ({"align.weight": 0.0}) applied,
    then validated.

    spec: "PATH" or "PATH:ARG" (as --config of fer_jax.main: get_config(ARG)); PATH is
    relative to the repository root, or absolute.
    """
    from fer_jax import cli, config_schema, errors
    path, _, arg = spec.partition(":")
    full = path if os.path.isabs(path) else os.path.join(ROOT, path)
    if not os.path.exists(full):
        raise errors.ConfigError(f"config file {path!r} does not exist (looked for "
                                        f"{full})")
    module_spec = importlib.util.spec_from_file_location("_grid_config", full)
    # A config file is a .py file: a known suffix always gets a spec with a loader.
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    cli.apply_overrides(config, overrides)
    config_schema.validate(config)
    return config


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def cell_record(grid: grids.Grid, cell: grids.Cell, position: int,
                shared_overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """What DIR/<cell>/cell.json holds: the cell and the grid it belongs to."""
    return _jsonable({
        "grid": grid.name, "layout": grid.layout, "description": grid.description,
        "cam_method": grid.cam_method, "position": position,
        "grid_cells": [c.name for c in grid.cells], **dataclasses.asdict(cell),
        "shared_overrides": dict(shared_overrides),
    })


def is_finished(workdir: str, cell: grids.Cell) -> bool:
    """Whether the cell wrote results.json, and one per extra split."""
    paths = [os.path.join(workdir, RESULTS)] + [
        os.path.join(workdir, extra_split_dir(s), RESULTS) for s in cell.extra_splits]
    return all(os.path.exists(p) for p in paths)


def _definition_changed(workdir: str, record: Dict[str, Any]) -> Optional[str]:
    """Why DIR/<cell> may not be reused for `record` (left by another grid, or by another
    definition of the cell), or None."""
    old = _read_record(workdir)
    for key in ("grid", "config", "overrides"):
        if old is not None and old.get(key) != record[key]:
            return (f"{workdir} holds a cell with {key}={old.get(key)!r}, not {record[key]!r}: "
                    "use another --out, or delete that folder to train it again")
    return None


def _read_record(workdir: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(workdir, CELL_JSON)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_cell(grid: grids.Grid, cell: grids.Cell, position: int, out: str,
             shared_overrides: Mapping[str, Any]) -> str:
    """Trains, evaluates (extra splits too) and returns 'finished' or 'resumed'.

    Raises whatever the training raises; a finished cell is not run again.
    """
    from fer_jax import evaluate, train
    workdir = os.path.join(out, cell.name)
    record = cell_record(grid, cell, position, shared_overrides)
    changed = _definition_changed(workdir, record)
    if changed:
        raise ValueError(changed)
    resumed = os.path.isdir(os.path.join(workdir, "checkpoints"))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CELL_JSON), "w") as f:
        json.dump(record, f, indent=2)
    config = load_config(cell.config, {**cell.overrides, **shared_overrides})
    if not os.path.exists(os.path.join(workdir, RESULTS)):
        train.train_and_evaluate(config, workdir)
    for split in cell.extra_splits:
        target = os.path.join(workdir, extra_split_dir(split))
        if not os.path.exists(os.path.join(target, RESULTS)):
            # The trained model on another split: accuracy and AU scores; the pictures
            # and the (costly) faithfulness curves stay with the main split.
            evaluate.evaluate_run(workdir, split=split, output=target,
                                  overrides={"eval.num_plot_images": 0,
                                             "eval.faithfulness_steps": 0})
    return "resumed" if resumed else "finished"


def run_grid(grid: grids.Grid, out: str, shard: Tuple[int, int] = (0, 1),
             shared_overrides: Optional[Mapping[str, Any]] = None,
             progress: bool = True) -> Dict[str, str]:
    """Runs the cells of `shard` (i, n) of `grid` under `out`, each at most once to the end.

    Returns {cell name: "skipped" (finished before), "finished", "resumed",
    "failed: <error>" or "stopped: <why>"}. A failing cell leaves its traceback in
    DIR/<cell>/error.txt. A cell whose training stops early (train.TrainingIncomplete)
    ends the grid there: later cells are not in the result.
    """
    from tqdm import tqdm

    from fer_jax import train
    shared_overrides = dict(shared_overrides or {})
    out = os.path.abspath(os.path.expanduser(out))
    os.makedirs(out, exist_ok=True)
    positions = {c.name: i for i, c in enumerate(grid.cells)}
    mine = grids.shard(grid.cells, *shard)
    status: Dict[str, str] = {}
    for c in mine:
        workdir = os.path.join(out, c.name)
        changed = _definition_changed(
            workdir, cell_record(grid, c, positions[c.name], shared_overrides))
        if changed:
            status[c.name] = f"failed: {changed}"
        elif is_finished(workdir, c):
            status[c.name] = "skipped"
    todo = [c for c in mine if c.name not in status]
    print(f"grid {grid.name}: {len(grid.cells)} cells, shard {shard[0]}/{shard[1]} has "
          f"{len(mine)}, {sum(s == 'skipped' for s in status.values())} finished before -> "
          f"{len(todo)} to run, in {out}", flush=True)
    for name, s in status.items():
        if s.startswith("failed"):
            print(f"cell {name}: {s}", flush=True)
    bar = tqdm(todo, desc=f"grid {grid.name}", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.name)
        start = time.time()
        error_path = os.path.join(out, cell.name, ERROR_TXT)
        try:
            status[cell.name] = run_cell(grid, cell, positions[cell.name], out,
                                         shared_overrides)
            if os.path.exists(error_path):
                os.remove(error_path)   # an earlier failure, fixed since
        except train.TrainingIncomplete as e:
            status[cell.name] = f"stopped: {e}"
        except Exception as e:   # noqa: BLE001 -- one failing cell must not stop the grid
            os.makedirs(os.path.dirname(error_path), exist_ok=True)
            with open(error_path, "w") as f:
                f.write(traceback.format_exc())
            status[cell.name] = f"failed: {type(e).__name__}: {e}"
        bar.write(f"cell {cell.name}: {status[cell.name]} ({time.time() - start:.0f} s)")
        if status[cell.name].startswith("stopped"):
            break   # the machine is going away, or the job's budget is spent
    bar.close()
    failed = [n for n, s in status.items() if s.startswith("failed")]
    stopped = [n for n, s in status.items() if s.startswith("stopped")]
    print(f"grid {grid.name}: {len(status) - len(failed) - len(stopped)} of {len(mine)} cells "
          "finished"
          + (f"; failed: {', '.join(failed)} (see {ERROR_TXT} in their folders)" if failed
             else "")
          + (f"; stopped in {stopped[0]}: run the same command again to resume" if stopped
             else "") + f". Tables: python -m fer_jax.tables --out={out}", flush=True)
    return status


def describe(grid: grids.Grid) -> str:
    """The cells of a grid, one per line (for --dry_run)."""
    lines = [f"{grid.name} ({grid.layout}): {grid.description}"]
    for i, c in enumerate(grid.cells):
        extra = f" +eval {','.join(c.extra_splits)}" if c.extra_splits else ""
        lines.append(f"  {i:2d} {c.name}: {c.config} {dict(c.overrides)}{extra}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    from absl import flags
    from fer_jax import cli
    cli.start(argv)
    FLAGS = flags.FLAGS
    try:
        grid = grids.get(FLAGS.grid)
        shard = grids.parse_shard(FLAGS.shard)
        shared = cli.overrides()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.dry_run:
        print(describe(grid))
        return
    if not FLAGS.out:
        print("error: --out=DIR is required (where the cells' workdirs go)", file=sys.stderr)
        sys.exit(2)
    status = run_grid(grid, FLAGS.out, shard, shared)
    if any(s.startswith("stopped") for s in status.values()):
        sys.exit(RESTART_EXIT_CODE)
    sys.exit(1 if any(s.startswith("failed") for s in status.values()) else 0)


def _define_flags() -> None:
    from absl import flags
    from fer_jax import cli
    flags.DEFINE_string("grid", None, f"Grid to run; one of: {', '.join(grids.GRIDS)}.")
    flags.DEFINE_string("out", None, "Folder of the cells' workdirs.")
    flags.DEFINE_string("shard", "0/1", "i/n: run only shard i (0-based) of n.")
    cli.define_config_overrides("Overrides applied to every cell, e.g. "
                                "--config.dataset.data_dir=~/tensorflow_datasets.")
    flags.DEFINE_boolean("dry_run", False, "List the grid's cells and stop.")
    flags.mark_flags_as_required(["grid"])


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    from fer_jax import cli
    _define_flags()
    cli.run(main)
