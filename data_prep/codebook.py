"""Expressions, action units, the expression -> AU codebook and AU -> face regions.

Everything here is data (docs/method.md, "AU codebook" and "AU regions"); the
rasteriser in `heatmaps.py` interprets it.

Landmarks follow the iBUG 68-point scheme (0-based). "Right"/"left" mean the
*subject's* side: in a frontal image the subject's right is the image's left,
which holds the lower-numbered point of every mirrored pair (0, 17, 36, 48 ...).
"""
from dataclasses import dataclass
from typing import Union

# Canonical class order shared by every dataset (docs/method.md, "Classes"). Contempt is the
# optional 8th class (AffectNet-8); 7-class datasets use EXPRESSIONS[:7].
EXPRESSIONS = (
    "Neutral",
    "Happiness",
    "Surprise",
    "Fear",
    "Anger",
    "Disgust",
    "Sadness",
    "Contempt",
)
NUM_BASIC = 7  # the paper's 7 basic classes

AU_NAMES = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    5: "upper lid raiser",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    12: "lip corner puller",
    14: "dimpler",
    15: "lip corner depressor",
    16: "lower lip depressor",
    17: "chin raiser",
    20: "lip stretcher",
    23: "lip tightener",
    24: "lip pressor",
    25: "lips part",
    26: "jaw drop",
    27: "mouth stretch",
}

# The paper's Fig. 2 (Disgust has AU10, not the code's AU5); Neutral has none,
# which makes its heatmap invalid.
EXPRESSION_AUS = {
    "Neutral": (),
    "Happiness": (6, 12, 25),
    "Surprise": (1, 2, 5, 26, 27),
    "Fear": (1, 2, 4, 5, 20, 25, 26, 27),
    "Anger": (4, 5, 7, 10, 17, 23, 24, 25, 26),
    "Disgust": (9, 10, 16, 17, 25, 26),
    "Sadness": (1, 4, 6, 15, 17),
    "Contempt": (12, 14),
}

# Expressions whose AUs act on one side only (EMFACS contempt: R12A + R14A).
# Ellipses tagged with the other side are dropped for these expressions.
EXPRESSION_SIDE = {"Contempt": "right"}

# Mirror partner of every iBUG point (a horizontal flip maps point i onto
# IBUG_MIRROR[i]); self-partnered points lie on the face's midline.
_MIRROR_PAIRS = (
    *((i, 16 - i) for i in range(8)),              # jaw 0..16
    *((17 + i, 26 - i) for i in range(5)),         # brows 17..26
    *((31 + i, 35 - i) for i in range(2)),         # nostrils 31..35
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),  # eyes
    *((48 + i, 54 - i) for i in range(3)),         # upper outer lip 48..54
    (55, 59), (56, 58),                            # lower outer lip
    (60, 64), (61, 63), (65, 67),                  # inner lip
)
IBUG_MIRROR = tuple(
    dict(_MIRROR_PAIRS + tuple((b, a) for a, b in _MIRROR_PAIRS)).get(i, i)
    for i in range(68)
)
# The subject's-right member of every pair (image left in a frontal face). Not
# simply the lower index: the lower lip and inner lip run right-to-left.
IBUG_RIGHT = frozenset(
    (*range(0, 8), *range(17, 22), 31, 32, *range(36, 42), 48, 49, 50, 58, 59, 60, 61, 67))


# --- A tiny vocabulary for region geometry ----------------------------------
# Distances are in units of the face scale s (landmark bounding-box width);
# image y grows downwards, so "up" is a negative dy.

@dataclass(frozen=True)
class Pt:
    """Landmark `i`."""
    i: int


@dataclass(frozen=True)
class Mean:
    """Mean of landmarks lo..hi (inclusive)."""
    lo: int
    hi: int


@dataclass(frozen=True)
class Mid:
    """Midpoint of landmarks a and b."""
    a: int
    b: int


@dataclass(frozen=True)
class XY:
    """x of landmark `x_of`, y of landmark `y_of`."""
    x_of: int
    y_of: int


@dataclass(frozen=True)
class Shift:
    """`base` moved by (dx, dy) * s."""
    base: "Centre"
    dx: float = 0.0
    dy: float = 0.0


@dataclass(frozen=True)
class Outward:
    """`base` moved by k * s horizontally, away from the landmarks' mean x."""
    base: "Centre"
    k: float


Centre = Union[Pt, Mean, Mid, XY, Shift, Outward]


@dataclass(frozen=True)
class K:
    """Constant k * s."""
    k: float


@dataclass(frozen=True)
class HalfDx:
    """Half the x-distance of landmarks a and b."""
    a: int
    b: int


@dataclass(frozen=True)
class HalfDy:
    """Half the y-distance of landmarks a and b."""
    a: int
    b: int


@dataclass(frozen=True)
class HalfW:
    """Half the width of landmarks lo..hi, plus k * s."""
    lo: int
    hi: int
    k: float = 0.0


@dataclass(frozen=True)
class HalfH:
    """Half the height of landmarks lo..hi, plus k * s."""
    lo: int
    hi: int
    k: float = 0.0


@dataclass(frozen=True)
class AtLeast:
    """`axis`, but never below k * s."""
    axis: "Axis"
    k: float


Axis = Union[K, HalfDx, HalfDy, HalfW, HalfH, AtLeast]


@dataclass(frozen=True)
class Ellipse:
    """One soft ellipse: centre, semi-axes (x, y), and the side it belongs to
    ("right", "left", or None for the midline)."""
    centre: Centre
    ax: Axis
    ay: Axis
    side: Union[str, None] = None


def _pair(right: Ellipse, left: Ellipse) -> tuple[Ellipse, Ellipse]:
    """Tag a mirrored pair of ellipses with their sides (subject's right first)."""
    return (Ellipse(right.centre, right.ax, right.ay, "right"),
            Ellipse(left.centre, left.ax, left.ay, "left"))


def _eye(lo: int, hi: int, extra: float) -> Ellipse:
    """The eye made of landmarks lo..hi, its height grown by extra * s."""
    return Ellipse(Mean(lo, hi), HalfW(lo, hi), HalfH(lo, hi, extra))


# The mouth as one ellipse (AUs 23, 24, 26, 27).
_MOUTH = (Ellipse(Mean(48, 67), HalfW(48, 67), AtLeast(HalfH(48, 67), 0.06)),)

# docs/method.md, "AU regions".
AU_REGIONS: dict[int, tuple[Ellipse, ...]] = {
    1: _pair(Ellipse(Pt(20), K(0.16), K(0.13)), Ellipse(Pt(23), K(0.16), K(0.13))),
    2: _pair(Ellipse(Pt(18), K(0.16), K(0.13)), Ellipse(Pt(25), K(0.16), K(0.13))),
    4: (Ellipse(Mid(19, 24), HalfDx(19, 24), K(0.08)),),
    5: _pair(_eye(36, 41, 0.06), _eye(42, 47, 0.06)),
    6: _pair(Ellipse(Shift(Pt(41), dy=0.22), K(0.13), K(0.13)),
             Ellipse(Shift(Pt(46), dy=0.22), K(0.13), K(0.13))),
    7: _pair(_eye(36, 41, 0.10), _eye(42, 47, 0.10)),
    9: _pair(Ellipse(XY(31, 29), K(0.12), K(0.12)),
             Ellipse(XY(35, 29), K(0.12), K(0.12))),
    10: _pair(Ellipse(Shift(Pt(49), dy=-0.04), K(0.12), K(0.12)),
              Ellipse(Shift(Pt(53), dy=-0.04), K(0.12), K(0.12))),
    12: _pair(Ellipse(Pt(48), K(0.12), K(0.12)), Ellipse(Pt(54), K(0.12), K(0.12))),
    14: _pair(Ellipse(Outward(Pt(48), 0.12), K(0.12), K(0.12)),
              Ellipse(Outward(Pt(54), 0.12), K(0.12), K(0.12))),
    15: _pair(Ellipse(Pt(48), K(0.12), K(0.12)), Ellipse(Pt(54), K(0.12), K(0.12))),
    16: _pair(Ellipse(Pt(59), K(0.12), K(0.12)), Ellipse(Pt(55), K(0.12), K(0.12))),
    17: (Ellipse(Mid(57, 8), HalfDx(48, 54), HalfDy(57, 8)),),
    20: _pair(Ellipse(Mid(48, 5), K(0.12), K(0.12)),
              Ellipse(Mid(54, 11), K(0.12), K(0.12))),
    23: _MOUTH,
    24: _MOUTH,
    25: (Ellipse(Pt(51), K(0.15), K(0.06)), Ellipse(Pt(57), K(0.15), K(0.06))),
    26: _MOUTH,
    27: _MOUTH,
}


def class_aus(label: int) -> tuple[int, ...]:
    """AUs of canonical class `label` (0 <= label < len(EXPRESSIONS))."""
    if not 0 <= label < len(EXPRESSIONS):
        raise ValueError(
            f"label {label} is not a canonical class; valid: 0..{len(EXPRESSIONS) - 1}")
    return EXPRESSION_AUS[EXPRESSIONS[label]]


def class_ellipses(label: int) -> tuple[Ellipse, ...]:
    """Every ellipse of class `label`'s AU regions, one-sided classes filtered,
    duplicates (AUs sharing a region) removed."""
    aus = class_aus(label)  # validates label
    side = EXPRESSION_SIDE.get(EXPRESSIONS[label])
    ellipses = (e for au in aus for e in AU_REGIONS[au])
    kept = [e for e in ellipses if side is None or e.side in (None, side)]
    return tuple(dict.fromkeys(kept))
