"""synthetic_faces: procedurally drawn faces whose 68 iBUG landmarks are exact.

A face is built in a canonical frame (face width 1, origin between the eyes,
y down): identity parameters give the neutral 68 points, each active AU of the
expression moves only the points of its own face region (AU_MOTION) and may add
a texture cue inside that region (wrinkles, cheek shading, teeth). The points are
then posed (rotation, scale, translation) into pixels, where everything is drawn
with anti-aliased OpenCV primitives. Nuisance (pose, hair, skin, background,
lighting, noise) depends on the identity only, so two expressions of one
identity differ exactly in the regions the expression's AUs name.
"""
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import cv2
import numpy as np

from data_prep import codebook

Colour = tuple[int, int, int]

# Sub-pixel precision of OpenCV drawing: coordinates carry 4 fractional bits.
_SHIFT = 4
_AA = cv2.LINE_AA
# Canonical point placed at the image centre (between brows and chin), so the
# face, not the hair, is centred.
_FACE_CENTRE = np.array([0.0, 0.17])
SPLIT_CODES = {"train": 0, "test": 1, "validation": 2}

# Landmark motion of each AU at full intensity, in canonical units (face width
# 1, y down), for the subject's-right and midline points only; the left side
# mirrors it (dx negated) unless the expression is one-sided. Each AU moves only
# points inside its own region of codebook.AU_REGIONS; AU 6 and 9 only add
# texture (_TEXTURES). Jaw points never move: a jaw drop opens the mouth instead,
# because the chin outline lies outside every mouth region.
AU_MOTION: dict[int, dict[int, tuple[float, float]]] = {
    1: {19: (0.0, -0.03), 20: (0.0, -0.06), 21: (0.0, -0.085)},
    2: {17: (0.0, -0.07), 18: (0.0, -0.08), 19: (0.0, -0.06), 20: (0.0, -0.025)},
    4: {19: (0.01, 0.035), 20: (0.025, 0.05), 21: (0.04, 0.06)},
    5: {37: (0.0, -0.04), 38: (0.0, -0.04)},
    7: {40: (0.0, -0.025), 41: (0.0, -0.025)},
    10: {49: (0.0, -0.045), 50: (0.0, -0.055), 51: (0.0, -0.05),
         61: (0.0, -0.05), 62: (0.0, -0.05)},
    12: {48: (-0.035, -0.065), 60: (-0.03, -0.06), 49: (-0.01, -0.02),
         59: (-0.01, -0.02), 61: (0.0, -0.01), 67: (0.0, -0.005)},
    14: {48: (-0.025, 0.0), 60: (-0.02, 0.0)},
    15: {48: (0.0, 0.06), 60: (0.0, 0.055), 49: (0.0, 0.015), 59: (0.0, 0.015)},
    16: {57: (0.0, 0.05), 58: (0.0, 0.045), 59: (0.0, 0.03),
         66: (0.0, 0.045), 67: (0.0, 0.04)},
    17: {57: (0.0, -0.025), 58: (0.0, -0.02), 59: (0.0, -0.01)},
    20: {48: (-0.05, 0.01), 60: (-0.045, 0.01), 49: (-0.02, 0.0), 59: (-0.02, 0.0),
         61: (-0.01, 0.0), 67: (-0.01, 0.0)},
    23: {49: (0.0, 0.01), 50: (0.0, 0.012), 51: (0.0, 0.012),
         57: (0.0, -0.012), 58: (0.0, -0.012), 59: (0.0, -0.01)},
    24: {48: (0.015, 0.0), 60: (0.012, 0.0)},
    25: {61: (0.0, -0.005), 62: (0.0, -0.005), 66: (0.0, 0.03), 67: (0.0, 0.025),
         57: (0.0, 0.03), 58: (0.0, 0.03), 59: (0.0, 0.02)},
    26: {66: (0.0, 0.045), 67: (0.0, 0.04), 57: (0.0, 0.045), 58: (0.0, 0.045),
         59: (0.0, 0.03)},
    27: {48: (0.015, 0.015), 60: (0.015, 0.015), 49: (0.0, -0.01), 50: (0.0, -0.012),
         51: (0.0, -0.012), 61: (0.0, -0.015), 62: (0.0, -0.015),
         57: (0.0, 0.04), 58: (0.0, 0.04), 59: (0.0, 0.03), 66: (0.0, 0.04),
         67: (0.0, 0.035)},
}
# AUs that bare the teeth; other open mouths (Surprise's 26 + 27) show a dark
# interior only.
_TEETH_AUS = frozenset((10, 16, 25))


@dataclass(frozen=True)
class Identity:
    """Who is drawn and how (everything but the expression).

    Geometry is canonical (face width 1); colours are RGB 0..255; pose and
    photometric fields are the nuisance a classifier should ignore.
    """
    jaw_height: float        # chin below the eye line, 0.64..0.72
    jaw_square: float        # jaw-curve exponent, 0.55 (square) .. 1.0 (round)
    forehead: float          # head top above the eye line, 0.55..0.68
    aspect: float            # vertical stretch of the whole face, 0.92..1.08
    eye_spacing: float       # eye centre |x|, 0.19..0.22
    eye_width: float         # 0.16..0.2
    eye_open: float          # eye height / width, 0.36..0.46
    brow_lift: float         # brow above the eye line, 0.11..0.14
    brow_thickness: float    # 0.03..0.05
    nose_length: float       # nostril line below the eye line, 0.2..0.25
    mouth_y: float           # 0.37..0.41
    mouth_half_width: float  # 0.15..0.19
    lip_thickness: float     # 0.03..0.045
    skin: Colour
    lips: Colour
    iris: Colour
    hair: Colour
    hair_style: int          # 0 bald, 1 short, 2 long, 3 fringe
    clothes: Colour
    background: int          # 0 flat, 1 stripes, 2 blobs, 3 gradient
    background_colours: tuple[Colour, Colour]
    rotation: float          # degrees, -15..15 (positive = counter-clockwise)
    scale: float             # face width / image size, 0.48..0.62
    translation: tuple[float, float]  # face centre offset / image size, +-0.05
    light: tuple[float, float, float]  # gain 0.75..1.2, x and y gradients +-0.35
    noise: float             # Gaussian noise std in grey levels, 0..10
    texture_seed: int        # background texture and noise field
    intensity: float         # expression intensity, 0.65..1.0


def _rgb(values: Iterable[Any]) -> Colour:
    """Three channel values (numbers) as a Colour of ints."""
    r, g, b = (int(v) for v in values)
    return r, g, b


def _colour(rng: np.random.Generator, lo: float, hi: float, base: Colour) -> Colour:
    """`base` scaled by a random factor in [lo, hi] with a slight per-channel tint."""
    f = rng.uniform(lo, hi) * rng.uniform(0.92, 1.08, 3)
    return _rgb(np.clip(np.array(base) * f, 0, 255))


_SKINS = ((255, 219, 190), (235, 190, 150), (200, 150, 110), (150, 100, 70),
          (100, 65, 45))
_HAIRS = ((25, 20, 20), (90, 55, 30), (210, 170, 100), (160, 70, 30),
          (170, 170, 170))
_IRISES = ((70, 45, 25), (60, 100, 150), (70, 110, 60), (40, 30, 25))


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random identity with random nuisance (consumes a fixed number of draws)."""
    u = rng.uniform
    skin = _colour(rng, 0.85, 1.1, _SKINS[rng.integers(len(_SKINS))])
    lips = _rgb(np.clip(
        np.array(skin) * np.array([0.85, 0.5, 0.5]) + np.array([30, 0, 0]), 0, 255))
    background_colours = (_rgb(rng.integers(0, 256, 3)),
                          _rgb(rng.integers(0, 256, 3)))
    return Identity(
        jaw_height=u(0.64, 0.72), jaw_square=u(0.55, 1.0), forehead=u(0.55, 0.68),
        aspect=u(0.92, 1.08), eye_spacing=u(0.19, 0.22), eye_width=u(0.16, 0.2),
        eye_open=u(0.36, 0.46), brow_lift=u(0.11, 0.14),
        brow_thickness=u(0.03, 0.05), nose_length=u(0.2, 0.25),
        mouth_y=u(0.37, 0.41), mouth_half_width=u(0.15, 0.19),
        lip_thickness=u(0.03, 0.045),
        skin=skin, lips=lips,
        iris=_colour(rng, 0.8, 1.2, _IRISES[rng.integers(len(_IRISES))]),
        hair=_colour(rng, 0.8, 1.2, _HAIRS[rng.integers(len(_HAIRS))]),
        hair_style=int(rng.integers(4)),
        clothes=_rgb(rng.integers(0, 256, 3)),
        background=int(rng.integers(4)),
        background_colours=background_colours,
        rotation=u(-15.0, 15.0), scale=u(0.48, 0.62),
        translation=(u(-0.05, 0.05), u(-0.05, 0.05)),
        light=(u(0.75, 1.2), u(-0.35, 0.35), u(-0.35, 0.35)),
        noise=u(0.0, 10.0), texture_seed=int(rng.integers(2**31)),
        intensity=u(0.65, 1.0),
    )


# --- geometry -----------------------------------------------------------------

def _mirror_right_side(pts: np.ndarray) -> np.ndarray:
    """Fill the subject's-left points as mirrors (x -> -x) of the right ones."""
    for i in codebook.IBUG_RIGHT:
        pts[codebook.IBUG_MIRROR[i]] = (-pts[i, 0], pts[i, 1])
    return pts


def neutral_shape(idn: Identity) -> np.ndarray:
    """(68, 2) canonical neutral landmarks of `idn`, exactly left-right symmetric."""
    p = np.zeros((68, 2))
    phi = np.pi * np.arange(17) / 16
    c = np.cos(phi)
    p[0:17] = np.stack([-0.5 * np.sign(c) * np.abs(c) ** idn.jaw_square,
                        -0.04 + idn.jaw_height * np.sin(phi)], axis=1)
    ec, ew = idn.eye_spacing, idn.eye_width
    u = np.linspace(0.0, 1.0, 5)
    p[17:22] = np.stack([-(ec + 0.85 * ew) + u * 1.55 * ew,
                         -idn.brow_lift - 0.035 * np.sin(np.pi * (0.2 + 0.7 * u))
                         + 0.02 * (1 - u)], axis=1)
    nl = idn.nose_length
    p[27:31] = np.stack([np.zeros(4), [-0.06, 0.3 * nl, 0.6 * nl, 0.88 * nl]], axis=1)
    p[31:34] = [(-0.085, nl), (-0.045, nl + 0.015), (0.0, nl + 0.022)]
    eh = ew * idn.eye_open
    p[36:42] = [(-ec - ew / 2, 0.0), (-ec - ew / 6, -eh / 2), (-ec + ew / 6, -eh / 2),
                (-ec + ew / 2, 0.0), (-ec + ew / 6, eh / 2), (-ec - ew / 6, eh / 2)]
    my, mw, lt = idn.mouth_y, idn.mouth_half_width, idn.lip_thickness
    p[48:52] = [(-mw, my), (-0.6 * mw, my - 0.9 * lt), (-0.25 * mw, my - 1.05 * lt),
                (0.0, my - 0.8 * lt)]
    p[57:60] = [(0.0, my + 1.3 * lt), (-0.3 * mw, my + 1.2 * lt), (-0.65 * mw, my + 0.95 * lt)]
    p[60:63] = [(-0.85 * mw, my), (-0.35 * mw, my), (0.0, my)]
    p[66:68] = [(0.0, my), (-0.35 * mw, my)]
    return _mirror_right_side(p)


def expression_shape(idn: Identity, label: int) -> np.ndarray:
    """(68, 2) canonical landmarks of `idn` showing class `label`."""
    p = neutral_shape(idn)
    one_sided = codebook.EXPRESSION_SIDE.get(codebook.EXPRESSIONS[label]) is not None
    for au in codebook.class_aus(label):
        for i, (dx, dy) in AU_MOTION.get(au, {}).items():
            p[i] += idn.intensity * np.array([dx, dy])
            j = codebook.IBUG_MIRROR[i]
            if j != i and not one_sided:
                p[j] += idn.intensity * np.array([-dx, dy])
    return p


class _Pose:
    """Canonical -> pixel similarity (plus the identity's vertical aspect)."""

    def __init__(self, idn: Identity, size: int):
        t = np.deg2rad(idn.rotation)
        # Image y points down, so a counter-clockwise turn on screen is -t.
        rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
        self.matrix = idn.scale * size * rot @ np.diag([1.0, idn.aspect])
        self.offset = size / 2.0 - 0.5 + np.array(idn.translation) * size
        self.px_per_unit = idn.scale * size

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) canonical -> (..., 2) pixel (x, y), pixel centres at integers."""
        return (np.asarray(pts) - _FACE_CENTRE) @ self.matrix.T + self.offset


def _fixed(px: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> OpenCV fixed-point int32 (for shift=_SHIFT)."""
    return np.round(np.asarray(px) * (1 << _SHIFT)).astype(np.int32)


def _ellipse(centre, rx: float, ry: float, t0: float = 0.0, t1: float = 2 * np.pi,
             n: int = 24) -> np.ndarray:
    """(n, 2) canonical points on an axis-aligned ellipse arc from angle t0 to t1."""
    t = np.linspace(t0, t1, n)
    return np.stack([centre[0] + rx * np.cos(t), centre[1] + ry * np.sin(t)], axis=1)


def _smooth(pts: np.ndarray, closed: bool, k: int = 4) -> np.ndarray:
    """Catmull-Rom curve through pts (N, 2), k samples per segment."""
    n = len(pts)
    idx = np.arange(n if closed else n - 1)
    at = (lambda i: pts[i % n]) if closed else (lambda i: pts[np.clip(i, 0, n - 1)])
    p0, p1, p2, p3 = at(idx - 1), at(idx), at(idx + 1), at(idx + 2)
    t = np.linspace(0.0, 1.0, k, endpoint=False)[None, :, None]
    curve = 0.5 * (2 * p1[:, None] + (p2 - p0)[:, None] * t
                   + (2 * p0 - 5 * p1 + 4 * p2 - p3)[:, None] * t**2
                   + (3 * p1 - p0 - 3 * p2 + p3)[:, None] * t**3).reshape(-1, 2)
    return curve if closed else np.concatenate([curve, pts[-1:]])


# --- drawing ------------------------------------------------------------------

class _Canvas:
    """An RGB uint8 image plus the pose, drawing in canonical coordinates."""

    def __init__(self, img: np.ndarray, pose: _Pose):
        self.img, self.pose = img, pose
        # Line width: ~2.2% of the face width, at least one pixel.
        self.line = max(1, int(round(0.022 * pose.px_per_unit)))

    def fill(self, pts: np.ndarray, colour: Colour, img=None) -> None:
        """Fill the canonical polygon pts (N, 2)."""
        cv2.fillPoly(self.img if img is None else img, [_fixed(self.pose(pts))],
                     colour, _AA, _SHIFT)

    def line_through(self, pts: np.ndarray, colour: Colour, closed: bool = False,
                     width: int = 0) -> None:
        """Polyline through canonical pts (N, 2)."""
        cv2.polylines(self.img, [_fixed(self.pose(pts))], closed, colour,
                      width or self.line, _AA, _SHIFT)

    def fill_clipped(self, clip: np.ndarray, paint: Callable[[np.ndarray], None]) -> None:
        """Run paint(layer) on a copy of the image and keep it only inside the
        canonical polygon `clip` (eyes under their lids, teeth inside lips)."""
        px = self.pose(clip)
        h, w = self.img.shape[:2]
        x0, y0 = np.maximum(np.floor(px.min(axis=0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(px.max(axis=0)).astype(int) + 2, (w, h))
        if x1 <= x0 or y1 <= y0:
            return
        layer = self.img.copy()
        paint(layer)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [_fixed(px - (x0, y0))], 255, _AA, _SHIFT)
        alpha = mask[..., None].astype(np.float32) / 255.0
        roi = self.img[y0:y1, x0:x1]
        roi[:] = np.round(roi * (1 - alpha) + layer[y0:y1, x0:x1] * alpha).astype(np.uint8)


def _shade(c: Colour, f: float) -> Colour:
    """Colour c darkened (f < 1) or lightened (f > 1)."""
    return _rgb(np.clip(np.array(c, float) * f, 0, 255))


def _background(idn: Identity, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) float32 background of the identity's kind."""
    c0, c1 = (np.array(c, np.float32) for c in idn.background_colours)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if idn.background == 1:  # stripes at a random angle and period
        a, period = rng.uniform(0, np.pi), rng.uniform(0.08, 0.3)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period)
    elif idn.background == 2:  # smooth random blobs
        t = cv2.resize(rng.uniform(0, 1, (5, 5)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC).clip(0, 1)
    elif idn.background == 3:  # vertical gradient
        t = yy
    else:
        t = np.zeros_like(xx)
    return c0 + t[..., None] * (c1 - c0)


def _draw_hair(cv: _Canvas, idn: Identity, back: bool) -> None:
    """Hair behind the face (back=True: long side curtains) or over it (cap)."""
    if back:
        if idn.hair_style == 2:
            cv.fill(np.concatenate([_ellipse((0.0, -0.04), 0.62, idn.forehead + 0.08,
                                             np.pi, 2 * np.pi),
                                    [(0.62, 0.5), (-0.62, 0.5)]]), idn.hair)
        return
    if idn.hair_style == 0:
        return
    outer = _ellipse((0.0, -0.04), 0.56, idn.forehead + 0.06, np.pi, 2 * np.pi)
    # The hairline stays above the highest raised brow and its forehead wrinkles.
    fringe_y = -0.44 if idn.hair_style == 3 else -0.49
    inner = _ellipse((0.0, -0.15), 0.52, -0.15 - fringe_y, 2 * np.pi, np.pi)
    if idn.hair_style == 3:  # a straight fringe
        inner[:, 1] = np.minimum(inner[:, 1], fringe_y + 0.02 * np.cos(40 * inner[:, 0]))
    cv.fill(np.concatenate([outer, inner]), idn.hair)


def _draw_eye(cv: _Canvas, idn: Identity, p: np.ndarray, lo: int) -> None:
    """Eye lo..lo+5: white and iris under the lids, then the lash line."""
    outline = _smooth(p[lo:lo + 6], closed=True)
    # The iris hangs from the eye corners, which no AU moves, so only the lids
    # decide how much of it shows.
    centre = (p[lo] + p[lo + 3]) / 2.0
    r = 0.27 * idn.eye_width

    def paint(layer: np.ndarray) -> None:
        cv.fill(outline, (240, 238, 232), layer)
        cv.fill(_ellipse(centre + (0, 0.004), r, r), idn.iris, layer)
        cv.fill(_ellipse(centre + (0, 0.004), 0.42 * r, 0.42 * r), (15, 12, 12), layer)

    cv.fill_clipped(outline, paint)
    cv.line_through(_smooth(p[lo:lo + 4], closed=False), _shade(idn.skin, 0.35))


def _draw_mouth(cv: _Canvas, idn: Identity, p: np.ndarray, aus: tuple[int, ...]) -> None:
    """Opening (dark, teeth for _TEETH_AUS), then upper and lower lip."""
    inner = _smooth(p[60:68], closed=True)
    teeth = bool(_TEETH_AUS.intersection(aus))

    def paint(layer: np.ndarray) -> None:
        cv.fill(inner, (45, 15, 20), layer)
        if teeth:
            down = np.array([0.0, 0.035])
            upper = _smooth(p[60:65], closed=False)
            cv.fill(np.concatenate([upper, upper[::-1] + down]), (235, 232, 220), layer)
            lower = _smooth(p[[64, 65, 66, 67, 60]], closed=False)
            cv.fill(np.concatenate([lower, lower[::-1] - 0.6 * down]), (215, 210, 200), layer)

    cv.fill_clipped(inner, paint)
    cv.fill(np.concatenate([_smooth(p[48:55], False), _smooth(p[60:65], False)[::-1]]),
            idn.lips)
    cv.fill(np.concatenate([_smooth(p[[54, 55, 56, 57, 58, 59, 48]], False),
                            _smooth(p[[60, 67, 66, 65, 64]], False)]), idn.lips)
    cv.line_through(_smooth(p[60:65], False), _shade(idn.lips, 0.55), width=1)


def _sides(label: int) -> tuple[int, ...]:
    """Mirror signs (-1: subject's right, +1: left) on which a paired cue is drawn."""
    side = codebook.EXPRESSION_SIDE.get(codebook.EXPRESSIONS[label])
    return {None: (-1, 1), "right": (-1,), "left": (1,)}[side]


# Texture cues, each drawn inside its AU's region: (canvas, identity, points,
# sides) -> None. Offsets are canonical; sides mirror paired cues.
def _brow_furrows(cv, idn, p, sides):
    """AU4: vertical furrows between the lowered brows."""
    y = (p[21, 1] + p[22, 1]) / 2.0
    for x in (-0.025, 0.025):
        cv.line_through(np.array([(x, y - 0.03), (x * 0.8, y + 0.045)]),
                        _shade(idn.skin, 0.55))


def _forehead_lines(anchor: int, dy: float) -> Callable:
    """AU1/AU2: short horizontal wrinkles above brow point `anchor`."""
    def cue(cv, idn, p, sides):
        for sx in sides:
            q = p[anchor] if sx < 0 else p[codebook.IBUG_MIRROR[anchor]]
            for k in (0.0, 0.035):
                arc = _ellipse((q[0], q[1] - dy - k + 0.09), 0.07, 0.09,
                               1.25 * np.pi, 1.75 * np.pi, 6)
                cv.line_through(arc, _shade(idn.skin, 0.7))
    return cue


def _cheek_bulge(cv, idn, p, sides):
    """AU6: raised cheek: a lit apple with a crease below it."""
    for sx, i in zip((-1, 1), (41, 46)):
        if sx in sides:
            c = p[i] + (0.0, 0.2)
            cv.fill(_ellipse(c, 0.085, 0.06), _shade(idn.skin, 1.12))
            cv.line_through(_ellipse(c + (0.0, 0.01), 0.09, 0.07, 0.15 * np.pi,
                                     0.85 * np.pi, 8), _shade(idn.skin, 0.65))


def _nose_wrinkles(cv, idn, p, sides):
    """AU9: wrinkles across the nose bridge, level with point 29."""
    for k in (-0.05, -0.015, 0.02):
        y = p[29, 1] + k
        for sx in sides:
            cv.line_through(np.array([(sx * 0.015, y), (sx * 0.075, y - 0.02 * sx * sx)]),
                            _shade(idn.skin, 0.5))


def _corner_crease(dy0: float, dy1: float) -> Callable:
    """AU12 / AU15: a crease just outside the mouth corners (up or down)."""
    def cue(cv, idn, p, sides):
        for sx, i in zip((-1, 1), (48, 54)):
            if sx in sides:
                cv.line_through(p[i] + np.array([(sx * 0.03, dy0), (sx * 0.05, dy1)]),
                                _shade(idn.skin, 0.6))
    return cue


def _dimple(cv, idn, p, sides):
    """AU14: a dimple outward of the mouth corner."""
    for sx, i in zip((-1, 1), (48, 54)):
        if sx in sides:
            cv.fill(_ellipse(p[i] + (sx * 0.06, 0.0), 0.015, 0.022), _shade(idn.skin, 0.55))


def _chin_boss(cv, idn, p, sides):
    """AU17: the raised chin's wrinkled boss below the lower lip."""
    c = (p[57] + p[8]) / 2.0
    w = 0.5 * (p[54, 0] - p[48, 0]) * 0.6
    cv.line_through(_ellipse(c, w, 0.035, 0.1 * np.pi, 0.9 * np.pi, 8), _shade(idn.skin, 0.6))
    cv.fill(_ellipse(c + (0.0, 0.005), 0.012, 0.012), _shade(idn.skin, 0.7))


def _stretch_folds(cv, idn, p, sides):
    """AU20: folds lateral to the stretched mouth corners."""
    for sx, i, j in ((-1, 48, 5), (1, 54, 11)):
        if sx in sides:
            c = (p[i] + p[j]) / 2.0
            cv.line_through(c + np.array([(sx * -0.01, -0.05), (sx * 0.015, 0.04)]),
                            _shade(idn.skin, 0.6))


_TEXTURES: dict[int, Callable] = {
    1: _forehead_lines(20, 0.09),
    2: _forehead_lines(18, 0.09),
    4: _brow_furrows,
    6: _cheek_bulge,
    9: _nose_wrinkles,
    12: _corner_crease(-0.045, 0.015),
    14: _dimple,
    15: _corner_crease(0.0, 0.05),
    17: _chin_boss,
    20: _stretch_folds,
}


def _draw_brow(cv: _Canvas, idn: Identity, p: np.ndarray, lo: int, hi: int) -> None:
    """Brow along landmarks lo..hi (its upper edge), tapering at the outer end."""
    top = p[lo:hi + 1]
    taper = np.array([0.55, 0.85, 1.0, 1.0, 0.9])
    taper = taper if lo == 17 else taper[::-1]
    bottom = top + np.stack([np.zeros(5), idn.brow_thickness * taper], axis=1)
    cv.fill(np.concatenate([top, bottom[::-1]]), _shade(idn.hair, 0.8))


def draw_face(identity: Identity, label: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw `identity` showing class `label` (0 <= label < 8).

    Returns (image, landmarks): image (S, S, 3) uint8 RGB; landmarks (68, 2)
    float32 pixel (x, y), iBUG order, pixel centres at integer coordinates.
    Deterministic: the same inputs give identical bytes.
    """
    idn, size = identity, image_size
    aus = codebook.class_aus(label)
    sides = _sides(label)
    rng = np.random.default_rng(idn.texture_seed)  # label-independent nuisance
    pose = _Pose(idn, size)
    p = expression_shape(idn, label)
    img = np.ascontiguousarray(
        np.clip(_background(idn, size, rng), 0, 255).astype(np.uint8))
    cv = _Canvas(img, pose)

    cv.fill(_ellipse((0.0, 1.2), 0.75, 0.45, np.pi, 2 * np.pi), idn.clothes)
    cv.fill(np.array([(-0.22, 0.3), (0.22, 0.3), (0.26, 1.2), (-0.26, 1.2)]),
            _shade(idn.skin, 0.82))  # neck
    _draw_hair(cv, idn, back=True)
    head_top = _ellipse((0.0, -0.04), 0.5, idn.forehead, 0.0, -np.pi, 20)
    jaw_only = neutral_shape(idn)[0:17]  # the jaw never moves
    cv.fill(np.concatenate([_smooth(jaw_only, False), head_top[1:-1]]), idn.skin)

    for au in aus:
        if au in _TEXTURES:
            _TEXTURES[au](cv, idn, p, sides)
    nose_shade = _shade(idn.skin, 0.7)
    cv.line_through(_smooth(p[31:36], False), nose_shade)
    for i in (32, 34):
        cv.fill(_ellipse(p[i] + (0.0, -0.01), 0.018, 0.012), _shade(idn.skin, 0.4))
    cv.line_through(p[[28, 30]] + (0.03, 0.0), _shade(idn.skin, 0.85))
    _draw_eye(cv, idn, p, 36)
    _draw_eye(cv, idn, p, 42)
    _draw_brow(cv, idn, p, 17, 21)
    _draw_brow(cv, idn, p, 22, 26)
    _draw_mouth(cv, idn, p, aus)
    _draw_hair(cv, idn, back=False)

    # Photometric nuisance, identical for every expression of the identity.
    gain, gx, gy = idn.light
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    light = gain + gx * ramp[None, :] + gy * ramp[:, None]
    noise = rng.normal(0.0, idn.noise, (size, size, 3)).astype(np.float32)
    out = np.clip(img * light[..., None] + noise, 0, 255)
    return np.round(out).astype(np.uint8), pose(p).astype(np.float32)


def make_example(seed: int, split: str, index: int, image_size: int,
                 num_classes: int = 7) -> dict:
    """Example `index` of `split` ("train", "test" or "validation").

    Returns {"image": (S, S, 3) uint8, "landmarks": (68, 2) float32 pixel (x, y),
    "label": int = index % num_classes (balanced), "id": "<split>_<index:06d>"}.
    The identity comes from default_rng([seed, split code, index]), so splits
    never share an identity stream and every example is reproducible alone.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"split {split!r}; valid: {sorted(SPLIT_CODES)}")
    if not 1 <= num_classes <= len(codebook.EXPRESSIONS):
        raise ValueError(f"num_classes {num_classes}; valid: 1..{len(codebook.EXPRESSIONS)}")
    identity = sample_identity(np.random.default_rng([seed, SPLIT_CODES[split], index]))
    label = index % num_classes
    image, landmarks = draw_face(identity, label, image_size)
    return {"image": image, "landmarks": landmarks, "label": label,
            "id": f"{split}_{index:06d}"}
