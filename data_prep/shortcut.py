"""A nuisance cue that predicts the label in training: a coloured patch outside the face.

`synthetic_faces/shortcut` draws, in the top-left corner of every image, a small
square whose colour names a class (PALETTE[k] for class k). Which class it names
depends on the split (`cue_class`):
- `train`: the example's own class with probability `rate`, otherwise one of the
  other classes uniformly, so the colour alone predicts the label `rate` of the time;
- `test`: a class drawn uniformly, independent of the label (the shortcut is useless);
- `test_cued`: the same test faces (identical pixels elsewhere) with the cue drawn as
  in training, so the accuracy gap test_cued - test measures the use of the shortcut.

The patch lies outside every AU region (the face is centred and covers about half
the image), so the AU heatmaps do not change; it is drawn last, after the lighting
and noise, so its colours are exact in the lossless records.
"""
import numpy as np

# One colour per class (7 basic classes), far apart in RGB so that any one pixel of
# the patch's interior names its class.
PALETTE = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255),
           (0, 255, 255), (255, 255, 255))
PATCH_FRACTION = 0.16    # side of the patch / image side
# Split -> how its cue relates to the label: "follow" (at the configured rate) or
# "random" (independent of the label).
SPLITS = {"train": "follow", "test": "random", "test_cued": "follow"}
_SPLIT_CODES = {"train": 0, "test": 1, "test_cued": 2}
_STREAM = 7_011   # keeps the cue's random stream apart from the faces' (seed, split, index)


def patch_box(image_size: int) -> tuple[int, int]:
    """(start, stop) pixel rows (and columns) of the patch, frame included."""
    side = max(4, int(round(PATCH_FRACTION * image_size)))
    return 0, side


def cue_class(seed: int, split: str, index: int, label: int, rate: float,
              num_classes: int = len(PALETTE)) -> int:
    """The class whose colour example `index` of `split` shows (deterministic).

    rate: probability, in the "follow" splits, that the cue names `label`.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}; valid: {sorted(SPLITS)}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"cue rate {rate!r}; valid: a probability in [0, 1]")
    if not 2 <= num_classes <= len(PALETTE):
        raise ValueError(f"num_classes {num_classes}; valid: 2..{len(PALETTE)}")
    rng = np.random.default_rng([seed, _STREAM, _SPLIT_CODES[split], index])
    if SPLITS[split] == "random":
        return int(rng.integers(num_classes))
    if rng.uniform() < rate:
        return label
    # Any other class, uniformly: the cue is wrong without favouring a class.
    return int((label + rng.integers(1, num_classes)) % num_classes)


def draw_cue(image: np.ndarray, cls: int) -> np.ndarray:
    """A copy of `image` (S, S, 3) uint8 with the patch of class `cls` in its top-left corner.

    A one-pixel black frame sets the patch apart from a background of similar colour.
    """
    out = image.copy()
    start, stop = patch_box(image.shape[0])
    out[start:stop, start:stop] = 0
    out[start + 1:stop - 1, start + 1:stop - 1] = PALETTE[cls]
    return out

