"""The paper's aggregation of per-sample AU scores (docs/method.md, "Aggregation of AU scores").

Per class, the mean over the samples whose AU map is valid; then the
unweighted mean over the non-neutral classes (Neutral has no AUs, so its maps
are always invalid). Rare classes weigh as much as frequent ones.
"""
from typing import Dict, Tuple

import numpy as np

NEUTRAL = 0   # canonical class order: Neutral first (data_prep.codebook)


def class_means(values: np.ndarray, labels: np.ndarray, keep: np.ndarray,
                num_classes: int) -> Dict[int, float]:
    """{class: mean of `values` over its samples where `keep`}; classes with none omitted.

    values (N,) float; labels (N,) int in [0, num_classes); keep (N,) bool.
    """
    values, labels, keep = np.asarray(values), np.asarray(labels), np.asarray(keep, bool)
    out = {}
    for k in range(num_classes):
        sel = keep & (labels == k)
        if sel.any():
            out[k] = float(values[sel].mean())
    return out


def paper_score(values: np.ndarray, labels: np.ndarray, keep: np.ndarray,
                num_classes: int) -> float:
    """Unweighted mean over the non-neutral classes of `class_means`; NaN if none has a sample."""
    scores = [v for k, v in class_means(values, labels, keep, num_classes).items()
              if k != NEUTRAL]
    return float(np.mean(scores)) if scores else float("nan")


def mean_ci95(values: np.ndarray) -> Tuple[float, float]:
    """(mean, half-width of its 95 % confidence interval) of per-sample values (N,).

    Normal approximation: 1.96 x the sample standard deviation / sqrt(N); the
    half-width is NaN for fewer than 2 values, the mean NaN for none.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1:
        return float(values[0]), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))
