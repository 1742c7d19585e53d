"""Pictures people look at: attention/CAM overlays on faces, the confusion matrix."""
from typing import Sequence

import matplotlib
matplotlib.use("Agg")  # files only; no display on TPU VMs or CI
import matplotlib.pyplot as plt
import numpy as np


def attention_grid(images: np.ndarray, heatmaps: np.ndarray, valid: np.ndarray,
                   attention: np.ndarray, cams: np.ndarray, labels: np.ndarray,
                   preds: np.ndarray, class_names: Sequence[str], layer: str,
                   path: str) -> None:
    """One row per image: the face, its AU map, the layer attention, the CAM.

    images (N, H, W, 3) in [0, 1]; heatmaps, attention, cams (N, H, W) in [0, 1].
    """
    n = len(images)
    cols = ("image", "AU map", f"attention ({layer})", "CAM (true class)")
    blocks = 2 if n > 8 else 1  # two faces side by side keep long lists readable
    rows = -(-n // blocks)
    fig, axes = plt.subplots(rows, 4 * blocks, figsize=(4 * blocks * 1.9, rows * 1.9),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        row, first = i % rows, 4 * (i // rows)
        truth, guess = class_names[int(labels[i])], class_names[int(preds[i])]
        overlays = (None, heatmaps[i] if valid[i] else None, attention[i], cams[i])
        for j, overlay in enumerate(overlays):
            ax = axes[row, first + j]
            ax.axis("on")
            ax.imshow(images[i])
            if overlay is not None:
                ax.imshow(overlay, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[j], fontsize=8)
        mark = "" if truth == guess else "  [wrong]"
        axes[row, first].set_ylabel(f"{truth}\npred: {guess}{mark}", fontsize=7)
        if not valid[i]:
            axes[row, first + 1].text(0.5, 0.5, "no AU map\n(invalid)", ha="center",
                                      va="center", fontsize=7, color="black",
                                      bbox={"facecolor": "white", "alpha": 0.7},
                                      transform=axes[row, first + 1].transAxes)
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
