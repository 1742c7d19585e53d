"""Pictures people look at: attention/CAM overlays on faces, the confusion matrix."""
from typing import List, Optional, Sequence, Tuple

import cv2
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


# --- Prediction pictures (OpenCV: tens per second, where matplotlib makes a few) ---

PREDICTION_PHOTO_SIDE = 640   # the photo panel's longer side at most
_TILE = 128                   # side of each face tile
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _overlay(face_rgb: np.ndarray, heat: Optional[np.ndarray]) -> np.ndarray:
    """A (T, T, 3) tile: the face, with a jet-coloured map in [0, 1] blended over it."""
    face = cv2.resize(face_rgb, (_TILE, _TILE), interpolation=cv2.INTER_LINEAR)
    if heat is None:
        return face
    heat = cv2.resize(np.asarray(heat, np.float32), (_TILE, _TILE),
                      interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(face, 0.5, cv2.cvtColor(colour, cv2.COLOR_BGR2RGB), 0.5, 0.0)


def face_tile(face_rgb: np.ndarray, heat: Optional[np.ndarray] = None) -> np.ndarray:
    """The (128, 128, 3) uint8 tile prediction_picture draws: a face crop (S, S, 3) uint8
    RGB, with a map (S, S) in [0, 1] jet-blended over it if given (fer_jax.serve's page)."""
    return _overlay(face_rgb, heat)


def _text(img: np.ndarray, text: str, xy: Tuple[int, int], scale: float = 0.4,
          colour: Tuple[int, int, int] = (0, 0, 0)) -> None:
    cv2.putText(img, text, xy, _FONT, scale, colour, 1, cv2.LINE_AA)


def _labelled_box(canvas: np.ndarray, box: Tuple[int, int, int, int], label: str) -> int:
    """A face's green box on `canvas` (H, W, 3) uint8, in place, with `label` on black above it
    (inside the image at the top edge); returns the label's text height in pixels."""
    x0, y0, x1, y1 = box
    cv2.rectangle(canvas, (x0, y0), (x1, y1), (40, 220, 40), 2)
    (tw, th), _ = cv2.getTextSize(label, _FONT, 0.5, 1)
    ty = max(th + 4, y0 - 4)
    cv2.rectangle(canvas, (x0, ty - th - 4), (x0 + tw + 4, ty + 3), (0, 0, 0), -1)
    _text(canvas, label, (x0 + 2, ty), 0.5, (40, 220, 40))
    return th


def _bars(probabilities: dict, label: str, width: int) -> np.ndarray:
    """Probability bars, one line per class, the predicted one in red."""
    tile = np.full((_TILE, width, 3), 255, np.uint8)
    rows = max(1, len(probabilities))
    step = (_TILE - 4) / rows
    for i, (name, p) in enumerate(probabilities.items()):
        y = int(4 + i * step)
        h = max(2, int(step) - 3)
        colour = (220, 40, 40) if name == label else (80, 120, 200)
        cv2.rectangle(tile, (70, y), (70 + int(p * (width - 110)), y + h), colour, -1)
        _text(tile, name[:9], (2, y + h), 0.32)
        _text(tile, f"{p:.2f}", (width - 36, y + h), 0.32)
    return tile


def prediction_picture(photo: np.ndarray, photo_scale: float, rows: Sequence, path: str
                       ) -> None:
    """One PNG per photo: the photo with boxes and labels, then one strip per face.

    photo: (H, W, 3) uint8 RGB (a preview); photo_scale: its pixels per file
    pixel; rows: predict.FaceResult of this photo. Strip: crop, CAM overlay,
    attention overlay, AU map (or why there is none), probability bars.
    """
    canvas_photo = np.ascontiguousarray(photo.copy())
    for r in rows:
        if r.box is None:
            continue
        x0, y0, x1, y1 = (int(round(v * photo_scale)) for v in r.box)
        _labelled_box(canvas_photo, (x0, y0, x1, y1), f"{r.face}: {r.label} {r.confidence:.2f}")
    strips = []
    titles = ("face", f"CAM ({rows[0].cam_method})" if rows else "CAM", "attention", "AU map",
              "probabilities")
    for r in rows:
        if r.crop is None:
            continue
        au = _overlay(r.crop, r.au_map)
        if r.au_map is None:
            au = (au * 0.35 + 165).astype(np.uint8)
            for k, line in enumerate(_wrap(r.agreement_note or "no AU map", 20)):
                _text(au, line, (4, 16 + 14 * k), 0.35)
        tiles = [_overlay(r.crop, None), _overlay(r.crop, r.cam), _overlay(r.crop, r.attention),
                 au, _bars(r.probabilities, r.label, 2 * _TILE)]
        width = sum(t.shape[1] for t in tiles) + 2 * (len(tiles) - 1)
        header = np.full((36, width, 3), 255, np.uint8)
        agreement = ("no agreement score" if r.cam_cos is None else
                     f"CAM-COS {r.cam_cos:.2f}, ATT-COS {r.att_cos:.2f} (1 = on the AUs)")
        _text(header, f"face {r.face}: {r.label} ({r.confidence:.2f}); {agreement}", (3, 13),
              0.42, (200, 30, 30))
        x = 0
        for title, tile in zip(titles, tiles):
            _text(header, title, (x + 3, 31), 0.38)
            x += tile.shape[1] + 2
        body = np.concatenate([np.pad(t, ((0, 0), (0, 2), (0, 0)), constant_values=255)
                               for t in tiles], axis=1)[:, :width]
        strips.append(np.concatenate([header, body], axis=0))
    width = max([canvas_photo.shape[1]] + [s.shape[1] for s in strips])
    parts = [np.pad(p, ((0, 6), (0, width - p.shape[1]), (0, 0)), constant_values=255)
             for p in [canvas_photo] + strips]
    cv2.imwrite(path, cv2.cvtColor(np.concatenate(parts, axis=0), cv2.COLOR_RGB2BGR))


def video_frame(frame: np.ndarray, rows: Sequence, tracks: Sequence[Optional[int]]
                ) -> np.ndarray:
    """A video frame annotated in place of its pixels (same size, for cv2.VideoWriter).

    frame: (H, W, 3) uint8 RGB; rows: predict.FaceResult of its faces (boxes in
    frame pixels); tracks: each row's track id. Per face: its box, "#track label
    confidence", and beside the box an inset of the model's crop with the CAM
    overlay and the probability bars (as in `prediction_picture`).
    Returns (H, W, 3) uint8 RGB.
    """
    canvas = np.ascontiguousarray(frame.copy())
    height, width = canvas.shape[:2]
    for r, track in zip(rows, tracks):
        if r.box is None and r.crop is None:
            continue
        x0, y0, x1, y1 = ((int(round(v)) for v in r.box) if r.box is not None
                          else (0, 0, width - 1, height - 1))
        th = _labelled_box(canvas, (x0, y0, x1, y1), f"#{track} {r.label} {r.confidence:.2f}")
        if r.crop is None:
            continue
        # Inset: CAM tile and bars (twice as wide), sized to the face, kept inside the frame.
        side = min(int(np.clip(0.6 * (y1 - y0), 40, _TILE)), width // 3, height)
        if side < 8:
            continue
        tiles = np.concatenate([_overlay(r.crop, r.cam),
                                _bars(r.probabilities, r.label, 2 * _TILE)], axis=1)
        inset = cv2.resize(tiles, (3 * side, side), interpolation=cv2.INTER_AREA)
        ix = int(np.clip(x0, 0, width - 3 * side))
        iy = y1 + 2 if y1 + 2 + side <= height else max(0, y0 - side - th - 10)
        canvas[iy:iy + side, ix:ix + 3 * side] = inset
    return canvas


def _wrap(text: str, width: int) -> List[str]:
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def paired_scores(labels: Sequence[str],
                  metrics: dict[str, Sequence[Tuple[Optional[float], Optional[float]]]],
                  path: str, title: Optional[str] = None) -> None:
    """One panel per metric: per row label, an arrow from the score without AU guidance
    to the score with it (a dot alone where one side is missing).

    metrics: {metric name: [(without, with) per label]}.
    """
    n = len(labels)
    # Title and legend take fixed inches, the rows 0.32 each: a short table stays legible.
    height = 1.5 + 0.32 * n
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), height),
                             squeeze=False, sharey=True)
    rows = np.arange(n)[::-1]   # first label on top, as in the table
    for ax, (name, pairs) in zip(axes[0], metrics.items()):
        for y, (before, after) in zip(rows, pairs):
            if before is not None and after is not None:
                ax.annotate("", xy=(after, y), xytext=(before, y),
                            arrowprops={"arrowstyle": "->", "color": "0.4"})
            if before is not None:
                ax.plot(before, y, "o", color="tab:grey", ms=5)
            if after is not None:
                ax.plot(after, y, "o", color="tab:red", ms=5)
        ax.set_title(name, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0, 0].set_yticks(rows, labels)
    axes[0, 0].set_ylim(-0.7, n - 0.3)
    handles = [axes[0, 0].plot([], [], "o", color=c, label=t)[0]
               for c, t in (("tab:grey", "without AU (lambda = 0)"), ("tab:red", "with AU"))]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    _suptitle(fig, title)
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1))   # 0.35 in for the legend below
    fig.savefig(path, dpi=100)
    plt.close(fig)


def lambda_sweep(lambdas: Sequence[float], series: dict[str, Sequence], path: str,
                 title: Optional[str] = None) -> None:
    """One panel per series (accuracy, ATT-COS, ...) against lambda, with error bars where a
    value averages several seeds.

    series: {name: [a Stat-like value with .mean, .std (or None) per lambda]}.
    """
    fig, axes = plt.subplots(1, len(series), figsize=(3.6 * len(series), 3.0), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items()):
        points = [(x, v.mean, v.std) for x, v in zip(lambdas, values) if v is not None]
        if points:
            xs, means, stds = (np.array(p) for p in zip(*points))
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, color="tab:blue")
        ax.set_xlabel("lambda")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    _suptitle(fig, title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _suptitle(fig, title: Optional[str]) -> None:
    """A figure title wrapped to the figure's width (a grid's description is long)."""
    if title:
        fig.suptitle("\n".join(_wrap(title, int(fig.get_figwidth() * 14))), fontsize=9)
