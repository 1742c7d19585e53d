"""results.json -> report.md: the paper's table layout, one row per CAM method."""
import math
from typing import Any, Dict, List

from fer_jax import cams

_COLUMNS = (
    ("CAM-COS ↑", "cam_cos"),
    ("pointing ↑", "pointing"),
    ("deletion AUC ↓", "deletion_auc"),
    ("insertion AUC ↑", "insertion_auc"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


# Below chance: (metric, True when higher is better) compared with the random reference row.
_CHANCE = (("cam_cos", True), ("pointing", True), ("deletion_auc", False),
           ("insertion_auc", True))
_RANDOM = "random"


def below_random(results: Dict[str, Any]) -> Dict[str, List[str]]:
    """{method: [metrics on which its map does worse than the random reference map]}.

    Empty without a `random` row. A map that a random one beats says nothing about the
    model (or the method does not suit this model and layer).
    """
    methods = results["cams"]
    chance = methods.get(_RANDOM)
    if not chance:
        return {}
    out: Dict[str, List[str]] = {}
    for m, scores in methods.items():
        if _is_reference(m):
            continue
        worse = [key for key, higher in _CHANCE
                 if _finite(scores.get(key)) and _finite(chance.get(key))
                 and (scores[key] < chance[key] if higher else scores[key] > chance[key])]
        if worse:
            out[m] = worse
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def _faithfulness_line(results: Dict[str, Any]) -> str:
    f = results.get("faithfulness") or {"steps": results.get("faithfulness_steps", 0)}
    if not f.get("steps"):
        return "Deletion/insertion: not computed (eval.faithfulness_steps=0)."
    blur = f.get("insertion_blur")
    start = ("RISE's blur" if blur == -1 else "the mean colour" if blur == 0 else
             f"a Gaussian blur of sigma {blur:g} x the side" if blur is not None else "a blur")
    where = (f"{f['examples']} of the {f['of']} examples ({f['subset']})" if "examples" in f
             else "every example")
    return (f"Deletion/insertion: {f['steps']} steps on {where}; insertion starts from "
            f"{start}; ± is the half-width of the 95 % confidence interval of the mean.")


def markdown(results: Dict[str, Any]) -> str:
    """The report of one evaluation, as Markdown."""
    lines: List[str] = [
        f"# Evaluation on `{results['split']}`",
        "",
        f"{results['num_examples']} examples, {results['num_valid_heatmaps']} with a valid AU map. "
        f"Accuracy (CL) {100 * results['accuracy']:.2f} %, mean class accuracy "
        f"{100 * results['mean_class_accuracy']:.2f} %.",
        "",
        f"CAMs of the true class at `{', '.join(results['cam_layers'])}` "
        f"(CAM: `{results['cam_layer']}`)"
        + "".join(f", {k}" for k, v in results.get("cam_options", {}).items() if v)
        + f"; methods: {', '.join(results['cam_methods'])}.",
        _faithfulness_line(results),
        "",
        "| method | CL | " + " | ".join(title for title, _ in _COLUMNS) + " |",
        "|---|---|" + "---|" * len(_COLUMNS),
    ]
    methods = results["cams"]
    same = results.get("same_maps", {})
    flagged = below_random(results)
    ordered = ([m for m in methods if not _is_reference(m)]
               + [m for m in methods if _is_reference(m)])
    for m in ordered:
        name = f"*{m} (reference)*" if _is_reference(m) else m
        if m in same:
            name += f" (= {same[m]})"
        cells = []
        for _, key in _COLUMNS:
            cell = _fmt(methods[m].get(key))
            half = methods[m].get(f"{key}_ci95")
            if _finite(half):
                cell += f" ± {half:.3f}"
            if key in flagged.get(m, ()):
                cell += " ⚠"
            cells.append(cell)
        lines.append(f"| {name} | {100 * results['accuracy']:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "CAM-COS and pointing: per class over samples with a valid AU map, then the mean over "
        "the non-neutral classes. Deletion/insertion: mean over the examples scored (no AU map "
        "needed).",
    ]
    if same:
        lines += ["", "Computed and scored once, the maps being provably identical for this "
                  "model (a linear head on the global average of the cam layer): "
                  + "; ".join(f"{a} = {o}" for a, o in same.items()) + "."]
    if flagged:
        lines += ["", "⚠ worse than the random reference map: "
                  + "; ".join(f"{m} ({', '.join(keys)})" for m, keys in flagged.items())
                  + ". Such a map says nothing about where the model looks (or the method "
                  "does not suit this model and layer)."]
    lines += [
        "",
        "## ATT-COS per layer",
        "",
        "| layer | ATT-COS ↑ | aligned |",
        "|---|---|---|",
    ]
    aligned = set(results.get("aligned_layers", ()))
    for layer, value in results["att_cos"].items():
        lines.append(f"| `{layer}` | {_fmt(value)} | {'yes' if layer in aligned else ''} |")
    per_class = results.get("per_class_accuracy", {})
    if per_class:
        lines += ["", "## Accuracy per class", "", "| class | accuracy |", "|---|---|"]
        lines += [f"| {name} | {100 * acc:.2f} % |" for name, acc in per_class.items()]
    return "\n".join(lines) + "\n"


def _is_reference(method: str) -> bool:
    return method in cams.REGISTRY and cams.REGISTRY[method].reference


def write(results: Dict[str, Any], path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown(results))
    return path
