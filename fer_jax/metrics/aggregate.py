"""The paper's aggregation of per-sample AU scores (docs/method.md, "Aggregation of AU scores").

Per class, the mean over the samples whose AU map is valid; then the
unweighted mean over the non-neutral classes (Neutral has no AUs, so its maps
are always invalid). Rare classes weigh as much as frequent ones.
"""
from typing import Callable, Dict, Tuple

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


BOOTSTRAP_SEED = 20240203   # fixed: the same resamples, so the same interval, on every run


def bootstrap_ci95(statistic: Callable[[np.ndarray], float], n: int, draws: int = 2000,
                   seed: int = BOOTSTRAP_SEED) -> Tuple[float, float]:
    """Percentile bootstrap 95 % interval (2.5th, 97.5th percentiles) of a statistic of N
    samples: `draws` resamples of N sample indices drawn with replacement.

    statistic: (N,) int indices into the samples -> a float (NaN where a resample
    leaves it undefined, e.g. no sample of a class; such draws are left out).
    Returns (low, high); (NaN, NaN) for no samples or when every draw is NaN. With
    few samples the interval is coarse (its ends are among few possible values):
    that is what a small set can say, not an artefact to smooth away.
    """
    if n <= 0 or draws <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(draws)], np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
