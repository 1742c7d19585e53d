"""Classification metrics from labels and predictions (host-side NumPy)."""
from typing import Any, Dict, Sequence

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts; rows: true class, columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, int), np.asarray(preds, int)), 1)
    return matrix


def summary(matrix: np.ndarray, class_names: Sequence[str]) -> Dict[str, Any]:
    """accuracy, mean_class_accuracy (over classes present) and per_class_accuracy by name."""
    matrix = np.asarray(matrix)
    per_class = {class_names[c]: float(matrix[c, c] / matrix[c].sum())
                 for c in range(len(class_names)) if matrix[c].sum()}
    total = matrix.sum()
    return {
        "accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "mean_class_accuracy": float(np.mean(list(per_class.values()))) if per_class
        else float("nan"),
        "per_class_accuracy": per_class,
    }
