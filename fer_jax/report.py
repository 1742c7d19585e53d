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
        + f"; deletion/insertion with {results['faithfulness_steps']} steps.",
        "",
        "| method | CL | " + " | ".join(title for title, _ in _COLUMNS) + " |",
        "|---|---|" + "---|" * len(_COLUMNS),
    ]
    methods = results["cams"]
    ordered = ([m for m in methods if not _is_reference(m)]
               + [m for m in methods if _is_reference(m)])
    for m in ordered:
        name = f"*{m} (reference)*" if _is_reference(m) else m
        cells = [_fmt(methods[m].get(key)) for _, key in _COLUMNS]
        lines.append(f"| {name} | {100 * results['accuracy']:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "CAM-COS and pointing: per class over samples with a valid AU map, then the mean over "
        "the non-neutral classes. Deletion/insertion: mean over every example (no AU map needed).",
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
