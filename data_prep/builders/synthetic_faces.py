"""TFDS builder of `synthetic_faces`, the embedded dataset that needs no download.

Procedurally drawn faces (data_prep.synthetic) whose 68 landmarks are exact, so
their AU heatmaps are exact too. Used by the demo config, the tests and CI.
The `shortcut` configs add a coloured patch that predicts the label in training
only (data_prep.shortcut), and a third split `test_cued`.
"""
import dataclasses
from typing import Iterator, Optional, Tuple

import tensorflow_datasets as tfds

from data_prep import codebook, heatmaps, shortcut, synthetic
from data_prep.builders import features


@dataclasses.dataclass
class SyntheticFacesConfig(tfds.core.BuilderConfig):
    """Size and resolution of one synthetic_faces variant (deterministic by seed)."""
    image_size: int = 64   # square images, pixels
    num_train: int = 3500  # training examples, balanced over the 7 classes
    num_test: int = 700    # test examples
    seed: int = 0          # one seed, one dataset: the same bytes on every machine
    # Shortcut configs only: how often the corner patch names the true class in
    # `train` and `test_cued` (None: no patch, and no `test_cued` split).
    cue_rate: Optional[float] = None


class SyntheticFaces(tfds.core.GeneratorBasedBuilder):
    """Synthetic 7-class facial-expression faces with landmarks and AU heatmaps."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        # Tiny: for unit and end-to-end tests (seconds to build).
        SyntheticFacesConfig(name="tiny", description="32 px, 112 train / 56 test",
                             image_size=32, num_train=112, num_test=56),
        # Small: the demo (configs/default.py) on a CPU.
        SyntheticFacesConfig(name="small", description="64 px, 3500 train / 700 test",
                             image_size=64, num_train=3500, num_test=700),
        # Medium: closer to real crops, for GPU/TPU runs.
        SyntheticFacesConfig(name="medium", description="112 px, 14000 train / 2800 test",
                             image_size=112, num_train=14000, num_test=2800),
        # Shortcut: `small` plus a corner patch whose colour follows the class 90% of
        # the time in train and is random in test (README, "AU guidance and a shortcut").
        SyntheticFacesConfig(name="shortcut", description="small + a colour cue: 90% "
                             "predictive in train, random in test, as in train in test_cued",
                             image_size=64, num_train=3500, num_test=700, cue_rate=0.9),
        # Shortcut tiny: the same at the size of `tiny`, for tests.
        SyntheticFacesConfig(name="shortcut_tiny", description="tiny + the shortcut cue",
                             image_size=32, num_train=112, num_test=56, cue_rate=0.9),
    ]
    DEFAULT_CONFIG_NAME = "small"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features.fer_features(self.builder_config.image_size, image_encoding="png"),
            supervised_keys=("image", "label"),
            description=__doc__,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        splits = {
            "train": self._generate_examples("train", cfg.num_train),
            "test": self._generate_examples("test", cfg.num_test),
        }
        if cfg.cue_rate is not None:
            splits["test_cued"] = self._generate_examples("test_cued", cfg.num_test)
        return splits

    def _generate_examples(self, split: str, num: int) -> Iterator[Tuple[str, dict]]:
        cfg = self.builder_config
        size = cfg.image_size
        # test_cued shows the test faces themselves: only the cue differs.
        faces = "test" if split == "test_cued" else split
        for index in range(num):
            ex = synthetic.make_example(cfg.seed, faces, index, size, codebook.NUM_BASIC)
            heat, valid = heatmaps.rasterise(ex["landmarks"], ex["label"], (size, size))
            image, key = ex["image"], ex["id"]
            if cfg.cue_rate is not None:
                cue = shortcut.cue_class(cfg.seed, split, index, ex["label"], cfg.cue_rate,
                                         codebook.NUM_BASIC)
                image, key = shortcut.draw_cue(image, cue), f"{split}_{index:06d}"
            yield key, {
                "id": key,
                "image": image,
                "landmarks": ex["landmarks"],
                "landmark_source": "exact",
                "heatmap": heatmaps.to_uint8(heat),
                "heatmap_valid": valid,
                "label": ex["label"],
            }
