"""The one record layout every fer_jax dataset is written in.

Every builder (synthetic_faces, rafdb, affectnet, image_folder) declares its
features with `fer_features`, so the online input pipeline reads all of them
the same way.
"""
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from data_prep import codebook

NUM_LANDMARKS = 68

# How the 68 landmarks of an example were obtained (counted in build reports).
LANDMARK_SOURCES = (
    "exact",         # known by construction (synthetic_faces)
    "dataset",       # shipped with the dataset (AffectNet)
    "dlib",          # dlib HOG detector + 68-point predictor
    "fallback_box",  # dlib predictor on the whole crop / dataset box (no detection)
    "failed",        # no landmarks: heatmap_valid is False
)


def fer_features(
    image_size: int,
    class_names: Sequence[str] = codebook.EXPRESSIONS[: codebook.NUM_BASIC],
    image_encoding: str = "jpeg",
) -> tfds.features.FeaturesDict:
    """Features of one example; images are square (image_size, image_size).

    - image: (S, S, 3) uint8, encoded as `image_encoding` ("jpeg" or "png").
    - landmarks: (68, 2) float32 pixel (x, y) in the stored image, iBUG order.
    - landmark_source: index into LANDMARK_SOURCES.
    - heatmap: (S, S, 1) uint8 PNG, the AU map scaled to [0, 255].
    - heatmap_valid: bool, False for Neutral, failed landmarks or an empty map.
    - label: canonical expression class (docs/method.md, "Classes").
    - id: the example's name in the source dataset (file name or index).
    """
    if image_encoding not in ("jpeg", "png"):
        raise ValueError(f"image_encoding={image_encoding!r}; valid: 'jpeg', 'png'")
    return tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "image": tfds.features.Image(
            shape=(image_size, image_size, 3), encoding_format=image_encoding),
        "landmarks": tfds.features.Tensor(shape=(NUM_LANDMARKS, 2), dtype=np.float32),
        "landmark_source": tfds.features.ClassLabel(names=LANDMARK_SOURCES),
        "heatmap": tfds.features.Image(
            shape=(image_size, image_size, 1), encoding_format="png"),
        "heatmap_valid": tfds.features.Tensor(shape=(), dtype=np.bool_),
        "label": tfds.features.ClassLabel(names=list(class_names)),
    })
