"""Named experiment grids: lists of cells (config file + overrides) and how to tabulate them.

Pure data and pure functions; nothing here trains. `fer_jax.experiments` runs the
cells of a grid, each in its own workdir; `fer_jax.tables` lays their results.json
files out in the grid's layout:
- `paper_table`: rows are CAM methods, every column "without AU -> with AU"
  (lambda = 0 against the config's own lambda), as the paper's Table 1;
- `lambda_sweep`: one row per lambda, and a plot of accuracy and ATT-COS against it;
- `layer_ablation`: one row per set of aligned layers;
- `seeds`: one row per lambda, mean +- standard deviation over seeds.
"""
import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from fer_jax import methods

LAYOUTS = ("paper_table", "lambda_sweep", "layer_ablation", "seeds")
POSTHOC = "posthoc"   # variant of the cells whose rows are the post-hoc CAM methods


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of a grid."""
    name: str                      # its workdir under the grid's --out folder; unique in the grid
    config: str                    # config file, relative to the repository root
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # "align.weight": 0
    variant: str = POSTHOC         # the trained model: cells of one variant share table rows
    methods: Tuple[str, ...] = ()  # its CAM methods shown as paper-table rows; () = all evaluated
    extra_splits: Tuple[str, ...] = ()  # splits evaluated too, after the config's eval split


@dataclasses.dataclass(frozen=True)
class Grid:
    """A named list of cells and the table layout of their results."""
    name: str
    layout: str                    # one of LAYOUTS
    description: str
    cells: Tuple[Cell, ...]
    cam_method: str = "cam"        # the map of the single-map layouts' CAM-COS and AUC columns


# The paper's ResNet-50 layers ("layer 1" .. "layer 5") and their combinations.
# Our notes on the paper say only that multi-layer combinations were tried; we align
# the deepest stages cumulatively (4-5, 3-5, 2-5, 1-5).
RESNET_STAGES = ("stem", "stage1", "stage2", "stage3", "stage4")
LAYER_COMBINATIONS = tuple(RESNET_STAGES[i:] for i in (3, 2, 1, 0))
SWEEP_LAMBDAS = (0.0, 1.0, 2.0, 4.0, 9.0, 15.0)
PAPER_POSTHOC = ("cam", "gradcam", "gradcam++", "layercam")   # the paper's post-hoc rows
SHORTCUT_SEEDS = (0, 1, 2)
SHORTCUT_LAMBDA = 4.0

_RAFDB = "configs/rafdb_resnet50.py"
_MINIATURE = "configs/miniature.py"              # the demo's length: trained models
_MINIATURE_QUICK = "configs/miniature_quick.py"  # 6 epochs: sweeps, ablations, a quick table
# configs/paper/ has every training-time method on RAF-DB, all but TS-CAM on AffectNet
# (each method's `paper_configs`, fer_jax.methods).
AFFECTNET_METHODS = methods.paper_methods("affectnet")


def _lambda_name(weight: float) -> str:
    return f"lambda{weight:g}"


def _with_and_without(variant: str, config: str, overrides: Mapping[str, Any],
                      methods: Tuple[str, ...]) -> List[Cell]:
    """The two cells of one paper-table variant: lambda = 0, and the config's own lambda."""
    return [Cell(f"{variant}_without_au", config, {**overrides, "align.weight": 0.0}, variant,
                 methods),
            Cell(f"{variant}_with_au", config, dict(overrides), variant, methods)]


def builtin_map(method: str) -> str:
    """The CAM method that scores a training-time method (its record's `cam_method`): its
    head's own map, or CAM for ADL and CutMix, which keep the linear GAP head."""
    return methods.get(method).cam_method


def paper_config(dataset: str) -> Callable[[str], str]:
    """method -> the config file of its paper row on `dataset` (its record's `paper_configs`)."""
    return lambda method: methods.get(method).paper_configs[dataset]


def paper_table(posthoc_config: str, method_config: Callable[[str], str],
                methods: Sequence[str], posthoc_overrides: Optional[Mapping[str, Any]] = None
                ) -> List[Cell]:
    """Every method of the paper's table, without and with AU guidance.

    One trained model gives the rows of every post-hoc method (posthoc_config); each
    training-time method of `methods` trains its own (method_config(method)) and shows
    only its built-in map, the only map evaluated.
    """
    cells = _with_and_without(POSTHOC, posthoc_config, dict(posthoc_overrides or {}), ())
    for method in methods:
        scored = builtin_map(method)
        cells += _with_and_without(method, method_config(method),
                                   {"eval.cam_methods": (scored,)}, (scored,))
    return cells


# APViT's row (a model, not a training-time method): no class map, so the paper leaves its
# CAM-COS out; fer_jax scores the class-token attention of its last block on the IR grid.
APVIT = "apvit"
APVIT_MAP = "cls_attention"


def apvit_row(config: str) -> List[Cell]:
    """The APViT row of a paper table: its config without and with AU guidance."""
    return _with_and_without(APVIT, config, {"eval.cam_methods": (APVIT_MAP,)}, (APVIT_MAP,))


def lambda_sweep(config: str, overrides: Optional[Mapping[str, Any]] = None) -> List[Cell]:
    """One cell per lambda of SWEEP_LAMBDAS."""
    return [Cell(_lambda_name(w), config, {**(overrides or {}), "align.weight": w})
            for w in SWEEP_LAMBDAS]


def layer_ablation(config: str, overrides: Optional[Mapping[str, Any]] = None) -> List[Cell]:
    """Lambda = 0, then each single stage aligned, then the multi-layer combinations."""
    base = dict(overrides or {})
    cells = [Cell("lambda0", config, {**base, "align.weight": 0.0})]
    for layers in [(s,) for s in RESNET_STAGES] + list(LAYER_COMBINATIONS):
        cells.append(Cell("align_" + "+".join(layers), config,
                          {**base, "align.layers": tuple(layers)}))
    return cells


def seeds(config: str, overrides: Mapping[str, Any], weights: Sequence[float],
          seed_list: Sequence[int], extra_splits: Tuple[str, ...] = ()) -> List[Cell]:
    """Each lambda of `weights` trained once per seed."""
    return [Cell(f"{_lambda_name(w)}_seed{s}", config,
                 {**dict(overrides), "align.weight": float(w), "train.seed": s},
                 extra_splits=extra_splits)
            for w in weights for s in seed_list]


def _miniature_table(config: str) -> Tuple[Cell, ...]:
    """The paper's table on synthetic faces from a miniature config file (its argument
    after ':' names the training-time method, or 'apvit')."""
    return tuple(paper_table(config, f"{config}:{{}}".format, methods.paper_methods(),
                             {"eval.cam_methods": PAPER_POSTHOC + ("random", "centre")})
                 + apvit_row(f"{config}:{APVIT}"))


def _grids() -> Dict[str, Grid]:
    cam_only = {"eval.cam_methods": ("cam",)}   # the single-map layouts' columns, no more
    # 6 epochs and 9-point deletion curves: 6 cells in under half an hour
    # on 2 cores. The cue is learnt within the first epochs, the faces later (README).
    shortcut = {"dataset.name": "synthetic_faces/shortcut", "train.num_epochs": 6.0,
                "eval.faithfulness_steps": 8, **cam_only}
    grids = [
        Grid("paper_table", "paper_table", "RAF-DB, ResNet-50 (TS-CAM: DeiT-S), and APViT: "
             "every method without and with AU guidance (lambda 4)",
             tuple(paper_table(_RAFDB, paper_config("rafdb"), methods.paper_methods("rafdb"))
                   + apvit_row("configs/paper/rafdb_apvit.py"))),
        Grid("paper_table_affectnet", "paper_table", "AffectNet, ResNet-50, and APViT: every "
             "CNN method without and with AU guidance (lambda 9)",
             tuple(paper_table("configs/affectnet_resnet50.py",
                               paper_config("affectnet"), AFFECTNET_METHODS)
                   + apvit_row("configs/paper/affectnet_apvit.py"))),
        Grid("lambda_sweep", "lambda_sweep", "RAF-DB, ResNet-50 + CAM: lambda in "
             f"{', '.join(f'{w:g}' for w in SWEEP_LAMBDAS)}", tuple(lambda_sweep(_RAFDB))),
        Grid("layer_ablation", "layer_ablation", "RAF-DB, ResNet-50 + CAM, lambda 4: which "
             "layers are aligned", tuple(layer_ablation(_RAFDB))),
        Grid("paper_table_synthetic", "paper_table", "synthetic_faces/small, the miniature "
             "ResNet-18/16 (TS-CAM: ViT patch 8; APViT: the micro APViT), 30 epochs: "
             "every method without and with AU guidance (lambda 4)",
             _miniature_table(_MINIATURE)),
        Grid("paper_table_synthetic_quick", "paper_table", "paper_table_synthetic at 6 "
             "epochs (TS-CAM: 5): how fast each method learns; the without-AU models have "
             "not learnt yet", _miniature_table(_MINIATURE_QUICK)),
        Grid("lambda_sweep_synthetic", "lambda_sweep", "synthetic_faces/small, the miniature "
             "model (6 epochs) + CAM: lambda in " + ", ".join(f"{w:g}" for w in SWEEP_LAMBDAS),
             tuple(lambda_sweep(_MINIATURE_QUICK, cam_only))),
        Grid("layer_ablation_synthetic", "layer_ablation", "synthetic_faces/small, the "
             "miniature model (6 epochs) + CAM, lambda 4: which layers are aligned",
             tuple(layer_ablation(_MINIATURE_QUICK, cam_only))),
        Grid("shortcut", "seeds", "synthetic_faces/shortcut, the demo model for 6 epochs: "
             "lambda 0 and "
             f"{SHORTCUT_LAMBDA:g}, seeds {', '.join(map(str, SHORTCUT_SEEDS))}; a corner "
             "patch predicts the label in train (90%), not in test",
             tuple(seeds("configs/default.py", shortcut, (0.0, SHORTCUT_LAMBDA),
                          SHORTCUT_SEEDS, extra_splits=("test_cued",)))),
    ]
    return {g.name: g for g in grids}


GRIDS: Dict[str, Grid] = _grids()


def get(name: str) -> Grid:
    """The built-in grid `name`; a ValueError lists the valid names."""
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; valid grids: {sorted(GRIDS)}")
    return GRIDS[name]


def parse_shard(text: str) -> Tuple[int, int]:
    """'i/n' -> (i, n), 0 <= i < n: this machine runs shard i of n."""
    parts = text.split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--shard={text!r} must be 'i/n' with integers, e.g. '0/2' and '1/2' "
                         "on two machines") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard={text!r}: need n >= 1 and 0 <= i < n (i counts from 0)")
    return index, count


def shard(cells: Sequence[Cell], index: int, count: int) -> List[Cell]:
    """The cells of shard `index` of `count`: every count-th cell from position index.

    Round-robin in grid order, so the shards differ in size by at most one cell and
    neighbours in a grid (often similar in cost) go to different machines.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need count >= 1 and 0 <= index < count")
    return list(cells[index::count])
