"""Rasterise a class's AU regions (codebook.AU_REGIONS) into one soft map.

docs/method.md, "AU regions" and "The AU map of one image": each region is one or two soft ellipses whose sizes
are fractions of the face scale s (the landmarks' bounding-box width); the map
is the pixel-wise max over the class's regions, min-max normalised to [0, 1].
"""
from typing import Optional

import numpy as np

from data_prep import codebook

# Gaussian profile in normalised ellipse radius r (r = 1 on the ellipse):
# v = exp(-r^2 / (2 SIGMA^2)). With SIGMA = 0.7 the ellipse boundary sits at
# v ~ 0.36 and the blob fades below 2% at twice the semi-axes, so regions read
# as soft blobs of about their nominal size.
SIGMA = 0.7
# A map whose peak inside the image is below the profile's value on the
# ellipse boundary has no pixel inside any region: every region is outside.
_VISIBLE = float(np.exp(-1.0 / (2.0 * SIGMA**2)))
# Faces narrower than this (pixels) are treated as failed landmarks.
_MIN_SCALE = 1e-3


def _centre(c: codebook.Centre, pts: np.ndarray, s: float) -> np.ndarray:
    """(2,) pixel position of centre spec `c` given landmarks pts (68, 2)."""
    match c:
        case codebook.Pt(i):
            return pts[i]
        case codebook.Mean(lo, hi):
            return pts[lo:hi + 1].mean(axis=0)
        case codebook.Mid(a, b):
            return (pts[a] + pts[b]) / 2.0
        case codebook.XY(x_of, y_of):
            return np.array([pts[x_of, 0], pts[y_of, 1]])
        case codebook.Shift(base, dx, dy):
            return _centre(base, pts, s) + s * np.array([dx, dy])
        case codebook.Outward(base, k):
            p = _centre(base, pts, s)
            away = 1.0 if p[0] >= pts[:, 0].mean() else -1.0
            return p + np.array([away * k * s, 0.0])
    raise TypeError(f"unknown centre spec {c!r}")


def _axis(a: codebook.Axis, pts: np.ndarray, s: float) -> float:
    """Semi-axis length in pixels of axis spec `a`."""
    match a:
        case codebook.K(k):
            return k * s
        case codebook.HalfDx(i, j):
            return abs(pts[i, 0] - pts[j, 0]) / 2.0
        case codebook.HalfDy(i, j):
            return abs(pts[i, 1] - pts[j, 1]) / 2.0
        case codebook.HalfW(lo, hi, k):
            return float(np.ptp(pts[lo:hi + 1, 0])) / 2.0 + k * s
        case codebook.HalfH(lo, hi, k):
            return float(np.ptp(pts[lo:hi + 1, 1])) / 2.0 + k * s
        case codebook.AtLeast(inner, k):
            return max(_axis(inner, pts, s), k * s)
    raise TypeError(f"unknown axis spec {a!r}")


def rasterise(
    landmarks: Optional[np.ndarray], label: int, size: tuple[int, int]
) -> tuple[np.ndarray, bool]:
    """AU heatmap of class `label` for a face with iBUG `landmarks`.

    Args:
      landmarks: (68, 2) pixel (x, y), iBUG 0-based order, pixel centres at
        integer coordinates; None when landmark detection failed.
      label: canonical class, 0 <= label < 8 (docs/method.md, "Classes").
      size: (h, w) of the map.
    Returns:
      (map, valid): map is float32 (h, w) in [0, 1] with max 1 when valid, all
      zeros when not; valid is False for Neutral, missing / non-finite /
      degenerate landmarks, or when every region lies outside the image.
    Raises:
      ValueError: label outside 0..7.
    """
    ellipses = codebook.class_ellipses(label)  # validates label
    h, w = size
    empty = np.zeros((h, w), np.float32)
    if not ellipses or landmarks is None:
        return empty, False
    pts = np.asarray(landmarks, np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"landmarks have shape {pts.shape}; expected (68, 2)")
    if not np.isfinite(pts).all():
        return empty, False
    s = float(np.ptp(pts[:, 0]))
    if s < _MIN_SCALE:
        return empty, False

    centres = np.array([_centre(e.centre, pts, s) for e in ellipses])  # (E, 2)
    axes = np.array([[_axis(e.ax, pts, s), _axis(e.ay, pts, s)] for e in ellipses])
    axes = np.maximum(axes, _MIN_SCALE)  # a zero-height mouth must not divide by 0
    # The profile decreases with r, so the max over ellipses is the profile of
    # the smallest normalised radius: one (E, h, w) min, then one exp.
    dx2 = ((np.arange(w, dtype=np.float32)[None, :] - centres[:, :1].astype(np.float32))
           / axes[:, :1].astype(np.float32)) ** 2  # (E, w)
    dy2 = ((np.arange(h, dtype=np.float32)[None, :] - centres[:, 1:].astype(np.float32))
           / axes[:, 1:].astype(np.float32)) ** 2  # (E, h)
    r2 = (dy2[:, :, None] + dx2[:, None, :]).min(axis=0)  # (h, w)
    heat = np.exp(r2 * np.float32(-1.0 / (2.0 * SIGMA**2)))
    lo, hi = float(heat.min()), float(heat.max())
    if hi < _VISIBLE:
        return empty, False
    if hi - lo < 1e-6:  # one region covers the whole image uniformly
        return np.ones((h, w), np.float32), True
    return ((heat - lo) / (hi - lo)).astype(np.float32), True


# Stored maps use 64 grey levels (multiples of 4, and 255): at most 2/255 off the
# float map, invisible to the cosine losses, and the PNG is ~35 % smaller, which
# keeps a record within 1.3x the bytes of its JPEG image.
QUANTUM = 4


def to_uint8(heatmap: np.ndarray) -> np.ndarray:
    """(h, w) float map in [0, 1] -> (h, w, 1) uint8 in [0, 255] for PNG storage.

    Values are quantised to multiples of QUANTUM (and 255 itself), so the result
    is within QUANTUM / 2 / 255 of `heatmap * 255 / 255`.
    """
    levels = np.round(np.clip(heatmap, 0.0, 1.0) * (255.0 / QUANTUM)) * QUANTUM
    return np.minimum(levels, 255.0).astype(np.uint8)[..., None]


def flip_landmarks_horizontally(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally flipped (np.fliplr) image of width `width`.

    Mirrors x about the image centre (pixel x -> width - 1 - x) and renumbers
    the points so the result is again in iBUG order: the flipped face's point
    0 (its right jaw, now on the image's left) is the mirrored old point 16.
    landmarks: (68, 2) pixel (x, y); returns a new (68, 2) array, same dtype.
    """
    pts = np.asarray(landmarks)
    mirrored = pts.copy()
    mirrored[:, 0] = (width - 1) - pts[:, 0]
    return mirrored[list(codebook.IBUG_MIRROR)]
