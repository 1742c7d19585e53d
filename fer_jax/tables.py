"""`python -m fer_jax.tables --out=DIR`: the cells of a grid -> table.md, table.csv and plots.

Reads DIR/<cell>/cell.json (written by fer_jax.experiments) and results.json (written by
the training) of every cell, and lays them out as the grid's layout says
(fer_jax.grids.LAYOUTS):
- `paper_table`: one row per CAM method, each column "without AU -> with AU";
  `paper_table.png` draws the same pairs;
- `lambda_sweep`: one row per lambda; `lambda_sweep.png` (accuracy and ATT-COS against lambda);
- `layer_ablation`: one row per set of aligned layers;
- `seeds`: one row per lambda.
Cells repeated with other seeds are averaged; with more than one, the spread is the
sample standard deviation (in the CSV too, as "<column> std"). Unfinished cells are
left out and named under the table, so a grid still running can be looked at.
"""
import csv
import dataclasses
import json
import math
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fer_jax import experiments, grids

Getter = Callable[["Run"], Optional[float]]


@dataclasses.dataclass
class Run:
    """One cell on disk: its cell.json, and its results (None while unfinished)."""
    record: Dict[str, Any]
    results: Optional[Dict[str, Any]]
    extra: Dict[str, Dict[str, Any]]    # split -> results.json of the extra evaluations

    @property
    def finished(self) -> Dict[str, Any]:
        """`results` of a finished run: the tables read finished runs only (`build`)."""
        assert self.results is not None
        return self.results

    @property
    def weight(self) -> float:
        return float(self.finished["config"]["align"]["weight"])


@dataclasses.dataclass(frozen=True)
class Stat:
    """A column's value over the runs of a row: mean, sample standard deviation, count."""
    mean: float
    std: float
    n: int


@dataclasses.dataclass(frozen=True)
class Column:
    title: str          # Markdown header (with the better direction)
    name: str           # CSV header
    get: Getter
    digits: int = 3


@dataclasses.dataclass
class Table:
    """Rows of Stats (pairs (without, with) when `paired`), ready for Markdown or CSV."""
    title: str
    key: str                           # header of the row labels
    columns: List[Column]
    paired: bool
    rows: List[Tuple[str, list]] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load(out: str) -> List[Run]:
    """Every cell under `out`, in grid order. Raises ValueError if there is none, or if the
    folder mixes grids."""
    out = os.path.abspath(os.path.expanduser(out))
    runs = []
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        record = _read_json(os.path.join(out, name, experiments.CELL_JSON))
        if record is None:
            continue
        folder = os.path.join(out, name)
        extra = {s: _read_json(os.path.join(folder, experiments.extra_split_dir(s),
                                            experiments.RESULTS))
                 for s in record.get("extra_splits", [])}
        runs.append(Run(record, _read_json(os.path.join(folder, experiments.RESULTS)),
                        {s: r for s, r in extra.items() if r is not None}))
    if not runs:
        raise ValueError(f"no cell in {out} (no */{experiments.CELL_JSON}); run a grid there "
                         "first: python -m fer_jax.experiments --grid=NAME --out=DIR")
    names = sorted({r.record["grid"] for r in runs})
    if len(names) > 1:
        raise ValueError(f"{out} holds cells of several grids {names}: one grid per folder")
    return sorted(runs, key=lambda r: r.record["position"])


def summarise(values: Sequence[Optional[float]]) -> Optional[Stat]:
    """Mean, sample standard deviation (0 for one value) and count of the defined values."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return None
    mean = sum(kept) / len(kept)
    var = sum((v - mean) ** 2 for v in kept) / (len(kept) - 1) if len(kept) > 1 else 0.0
    return Stat(mean, math.sqrt(var), len(kept))


# --- columns ---------------------------------------------------------------------------------

def _accuracy(split: Optional[str] = None) -> Getter:
    """Top-1 accuracy in percent, on the cell's eval split or on an extra split."""
    def get(run: Run) -> Optional[float]:
        results = run.results if split is None else run.extra.get(split)
        return None if results is None else 100.0 * results["accuracy"]
    return get


def _att_cos(run: Run) -> Optional[float]:
    """ATT-COS of the first aligned layer (the paper's: the last stage, "layer 5")."""
    return run.finished["att_cos"].get(run.finished["aligned_layers"][0])


def _att_cos_of(layer: str) -> Getter:
    return lambda run: run.finished["att_cos"].get(layer)


def _att_cos_aligned(run: Run) -> Optional[float]:
    """Mean ATT-COS over the aligned layers (undefined when nothing is aligned)."""
    if run.weight == 0:
        return None
    values = [run.finished["att_cos"].get(n) for n in run.finished["aligned_layers"]]
    return None if None in values else sum(values) / len(values)


def _cam_score(method: str, key: str) -> Getter:
    return lambda run: run.finished["cams"].get(method, {}).get(key)


def _per_method_columns(method: str) -> List[Column]:
    return [Column("CAM-COS ↑", "CAM-COS", _cam_score(method, "cam_cos")),
            Column("pointing ↑", "pointing", _cam_score(method, "pointing")),
            Column("deletion AUC ↓", "deletion AUC", _cam_score(method, "deletion_auc")),
            Column("insertion AUC ↑", "insertion AUC", _cam_score(method, "insertion_auc"))]


CL = Column("CL ↑", "CL", _accuracy(), 2)
ATT_COS = Column("ATT-COS ↑", "ATT-COS", _att_cos)


def _stats(runs: Sequence[Run], columns: Sequence[Column]) -> List[Optional[Stat]]:
    return [summarise([c.get(r) for r in runs]) for c in columns]


def _groups(runs: Sequence[Run], key: Callable[[Run], Any]) -> List[Tuple[Any, List[Run]]]:
    """Runs grouped by key, groups in order of first appearance."""
    out: Dict[Any, List[Run]] = {}
    for r in runs:
        out.setdefault(key(r), []).append(r)
    return list(out.items())


# --- layouts ---------------------------------------------------------------------------------

def _is_reference(method: str) -> bool:
    from fer_jax import cams
    return method in cams.REGISTRY and cams.REGISTRY[method].reference


def _row_methods(runs: Sequence[Run]) -> List[str]:
    """The CAM methods a variant shows: the cell's `methods`, or all it evaluated."""
    listed = runs[0].record.get("methods") or []
    if listed:
        return list(listed)
    seen: List[str] = []
    for r in runs:
        seen += [m for m in r.finished["cam_methods"] if m not in seen]
    return seen


def _paper_columns(method: str) -> List[Column]:
    """The paper's Table 1 columns for one CAM method, faithfulness last."""
    cam_cos, *faithfulness = _per_method_columns(method)
    return [CL, cam_cos, ATT_COS] + faithfulness


def paper_table(runs: Sequence[Run]) -> Table:
    """Rows: the methods of every variant, then the reference maps; columns without -> with."""
    table = Table("", "method", _paper_columns(""), paired=True)
    rows: List[Tuple[str, str, List[Run]]] = []          # (label, method, runs of its variant)
    references: Dict[str, List[Run]] = {}               # the first variant's reference maps
    for variant, group in _groups(runs, lambda r: r.record["variant"]):
        methods = _row_methods(group)
        for method in methods:
            if _is_reference(method):
                references.setdefault(method, group)
            elif variant == grids.POSTHOC:
                rows.append((method, method, group))
            else:   # a training-time method: the row is the method, whatever map scores it
                rows.append((variant if len(methods) == 1 else f"{variant} ({method})",
                             method, group))
    rows += [(f"*{m} (reference)*", m, group) for m, group in references.items()]
    for label, method, group in rows:
        columns = _paper_columns(method)
        without = _stats([r for r in group if r.weight == 0], columns)
        with_au = _stats([r for r in group if r.weight > 0], columns)
        table.rows.append((label, list(zip(without, with_au))))
    table.notes.append("Each column: lambda = 0 -> the config's lambda (with AU guidance). "
                       "ATT-COS at each model's first aligned layer. Rows of training-time "
                       "methods score their built-in map (CAM for adl and cutmix).")
    return table


def _single_map_columns(method: str, extra_splits: Sequence[str] = ()) -> List[Column]:
    cam_cos, pointing, deletion, insertion = _per_method_columns(method)
    extra = [Column(f"CL {s} ↑", f"CL {s}", _accuracy(s), 2) for s in extra_splits]
    return [CL] + extra + [ATT_COS, cam_cos, pointing, deletion, insertion]


def lambda_sweep(runs: Sequence[Run], method: str) -> Table:
    """One row per lambda, increasing."""
    table = Table("", "lambda", _single_map_columns(method), paired=False)
    for weight, group in sorted(_groups(runs, lambda r: r.weight)):
        table.rows.append((f"{weight:g}", _stats(group, table.columns)))
    table.notes.append(f"CAM-COS, pointing and AUCs of `{method}`; ATT-COS at the first "
                       "aligned layer.")
    return table


def layer_ablation(runs: Sequence[Run], method: str) -> Table:
    """One row per set of aligned layers (lambda = 0: none), in grid order."""
    cam_layer = runs[0].finished["cam_layer"]
    cam_cos, pointing, deletion, insertion = _per_method_columns(method)
    columns = [CL, cam_cos, Column("ATT-COS aligned ↑", "ATT-COS aligned", _att_cos_aligned),
               Column(f"ATT-COS {cam_layer} ↑", f"ATT-COS {cam_layer}", _att_cos_of(cam_layer)),
               pointing, deletion, insertion]
    table = Table("", "aligned layers", columns, paired=False)
    label = (lambda r: "none (lambda = 0)" if r.weight == 0
             else " + ".join(r.results["aligned_layers"]))
    for name, group in _groups(runs, label):
        table.rows.append((name, _stats(group, columns)))
    table.notes.append(f"CAM-COS, pointing and AUCs of `{method}`; 'ATT-COS aligned': the mean "
                       "over the aligned layers.")
    return table


def seeds(runs: Sequence[Run], method: str) -> Table:
    """One row per lambda; every column over the seeds."""
    extra = list(runs[0].record.get("extra_splits", []))
    table = Table("", "lambda", _single_map_columns(method, extra), paired=False)
    for weight, group in sorted(_groups(runs, lambda r: r.weight)):
        table.rows.append((f"{weight:g}", _stats(group, table.columns)))
    table.notes.append(f"Mean ± sample standard deviation over seeds (n per value). CAM-COS, "
                       f"pointing and AUCs of `{method}`; ATT-COS at the first aligned layer.")
    return table


# --- rendering -------------------------------------------------------------------------------

def _fmt(stat: Optional[Stat], digits: int) -> str:
    if stat is None:
        return "-"
    text = f"{stat.mean:.{digits}f}"
    return text + (f" ± {stat.std:.{digits}f} (n={stat.n})" if stat.n > 1 else "")


def markdown(table: Table) -> str:
    """The table in Markdown, its title first and its notes after it."""
    lines = [f"# {table.title}", "",
             f"| {table.key} | " + " | ".join(c.title for c in table.columns) + " |",
             "|---|" + "---|" * len(table.columns)]
    for label, values in table.rows:
        if table.paired:
            cells = [f"{_fmt(a, c.digits)} -> {_fmt(b, c.digits)}"
                     for c, (a, b) in zip(table.columns, values)]
        else:
            cells = [_fmt(v, c.digits) for c, v in zip(table.columns, values)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for note in table.notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _spread(table: Table) -> bool:
    """Whether some value averages several seeds (the CSV then has std and n columns)."""
    stats = [s for _, values in table.rows for v in values
             for s in (v if table.paired else (v,))]
    return any(s is not None and s.n > 1 for s in stats)


def csv_rows(table: Table) -> List[List[str]]:
    """Header and rows: plain numbers (CL in percent), empty where undefined."""
    sides = (" without", " with") if table.paired else ("",)
    parts = ("", " std", " n") if _spread(table) else ("",)
    header = [table.key] + [f"{c.name}{side}{part}" for c in table.columns for side in sides
                            for part in parts]
    rows = [header]
    for label, values in table.rows:
        row = [label.strip("*").replace(" (reference)", "")]
        for value in values:
            for stat in (value if table.paired else (value,)):
                fields = (stat.mean, stat.std, stat.n) if stat is not None else ("",) * 3
                row += [repr(f) if isinstance(f, float) else str(f) for f in fields[:len(parts)]]
        rows.append(row)
    return rows


# --- the command -----------------------------------------------------------------------------

LAYOUT_TABLES = {"paper_table": lambda runs, method: paper_table(runs),
                 "lambda_sweep": lambda_sweep, "layer_ablation": layer_ablation,
                 "seeds": seeds}


def build(runs: Sequence[Run]) -> Table:
    """The table of a grid's runs, in its layout, with title and notes on what is missing."""
    first = runs[0].record
    done = [r for r in runs if r.results is not None]
    if not done:
        raise ValueError(f"no cell of grid {first['grid']!r} has finished yet (no results.json)")
    table = LAYOUT_TABLES[first["layout"]](done, first["cam_method"])
    table.title = f"{first['grid']}: {first['description']}"
    expected = first.get("grid_cells", [r.record["name"] for r in runs])
    missing = [n for n in expected if n not in {r.record["name"] for r in done}]
    seconds = sum(r.finished.get("train", {}).get("seconds") or 0.0 for r in done)
    table.notes.append(f"{len(done)} of {len(expected)} cells finished"
                       + (f"; missing: {', '.join(missing)}" if missing else "")
                       + f". Training time, summed over the cells: {seconds / 60:.1f} min.")
    return table


def write(out: str) -> List[str]:
    """table.md, table.csv and the layout's plot in `out`; returns their paths."""
    from fer_jax import plots
    out = os.path.abspath(os.path.expanduser(out))
    runs = load(out)
    table = build(runs)
    paths = [os.path.join(out, "table.md"), os.path.join(out, "table.csv")]
    with open(paths[0], "w", encoding="utf-8") as f:
        f.write(markdown(table))
    with open(paths[1], "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(csv_rows(table))
    layout = runs[0].record["layout"]
    if layout == "paper_table":
        paths.append(os.path.join(out, "paper_table.png"))
        plots.paired_scores([label.strip("*") for label, _ in table.rows],
                            {c.name: [(a and a.mean, b and b.mean) for a, b in
                                      (values[i] for _, values in table.rows)]
                             for i, c in enumerate(table.columns[:3])}, paths[-1],
                            title=table.title)
    elif layout == "lambda_sweep":
        paths.append(os.path.join(out, "lambda_sweep.png"))
        lambdas = [float(label) for label, _ in table.rows]
        plots.lambda_sweep(lambdas, {c.name: [values[i] for _, values in table.rows]
                                     for i, c in enumerate(table.columns[:2])}, paths[-1],
                           title=table.title)
    return paths


def main(argv: Sequence[str]) -> None:
    from absl import flags
    if len(argv) > 1:
        from absl import app
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        paths = write(flags.FLAGS.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    with open(paths[0], encoding="utf-8") as f:
        print(f.read())
    print(f"Wrote {', '.join(paths)}.")


if __name__ == "__main__":
    from absl import flags
    flags.DEFINE_string("out", None, "A folder of grid cells (--out of fer_jax.experiments).")
    flags.mark_flags_as_required(["out"])
    from fer_jax import cli
    cli.run(main)
