"""Pictures people look at: attention/CAM overlays on faces, the confusion matrix."""
from typing import Optional, Sequence, Tuple

import matplotlib
matplotlib.use("Agg")  # files only; no display on TPU VMs or CI
import matplotlib.pyplot as plt
import numpy as np


def overlay_grid(images: np.ndarray, columns: Sequence[Tuple[str, np.ndarray]],
                 heatmaps: np.ndarray, valid: np.ndarray, labels: np.ndarray,
                 preds: np.ndarray, class_names: Sequence[str], path: str,
                 title: Optional[str] = None) -> None:
    """One row per face: the face, its AU map, then one overlay per column.

    images (N, H, W, 3) in [0, 1]; heatmaps (N, H, W) in [0, 1] (shown where
    `valid`); columns: (title, (N, H, W) maps in [0, 1]) drawn over the face.
    Long lists put two faces side by side so the picture stays readable.
    """
    n = len(images)
    titles = ["image", "AU map"] + [t for t, _ in columns]
    per_face = len(titles)
    blocks = 2 if n > 8 else 1
    rows = max(1, -(-n // blocks))
    fig, axes = plt.subplots(rows, per_face * blocks,
                             figsize=(per_face * blocks * 1.9, rows * 1.9 + (0.3 if title else 0)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        row, first = i % rows, per_face * (i // rows)
        truth, guess = class_names[int(labels[i])], class_names[int(preds[i])]
        overlays = [None, heatmaps[i] if valid[i] else None] + [m[i] for _, m in columns]
        for j, overlay in enumerate(overlays):
            ax = axes[row, first + j]
            ax.axis("on")
            ax.imshow(images[i])
            if overlay is not None:
                ax.imshow(overlay, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[j], fontsize=8)
        mark = "" if truth == guess else "  [wrong]"
        axes[row, first].set_ylabel(f"{truth}\npred: {guess}{mark}", fontsize=7)
        if not valid[i]:
            axes[row, first + 1].text(0.5, 0.5, "no AU map\n(invalid)", ha="center",
                                      va="center", fontsize=7, color="black",
                                      bbox={"facecolor": "white", "alpha": 0.7},
                                      transform=axes[row, first + 1].transAxes)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str) -> None:
    """Row-normalised confusion matrix (rows: true class) with counts in the cells."""
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.8 * k))
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for r in range(k):
        for c in range(k):
            ax.text(c, r, f"{matrix[r, c]}", ha="center", va="center", fontsize=8,
                    color="white" if rates[r, c] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
