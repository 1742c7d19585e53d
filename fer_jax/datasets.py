"""A built dataset's records, found and decoded without TensorFlow or TFDS.

data_prep writes each dataset with its TFDS builder into
DATA_DIR/NAME/CONFIG/VERSION/: TFRecord shards per split, `dataset_info.json`
(file format, splits with their shard lengths and file-name template),
`features.json` (the feature types) and `<feature>.labels.txt` (class names).
`find` reads those JSON files; `BuiltDataset.split_source` gives random access to a
split's serialized examples (fer_jax.records), and `decode` turns one into arrays
(PNG with OpenCV; JPEG with libjpeg-turbo's fast integer DCT through simplejpeg, the
setting TensorFlow's decoder uses, so the pixels are TFDS's to the bit).
"""
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import simplejpeg

from fer_jax import records

INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"


@dataclasses.dataclass(frozen=True)
class BuiltDataset:
    """What training and evaluation need to know of a built dataset."""
    name: str                          # "synthetic_faces/tiny" (NAME/CONFIG)
    directory: str                     # DATA_DIR/NAME/CONFIG/VERSION
    version: str
    files: Dict[str, List[str]]        # split -> its TFRecord shards, in order
    shard_lengths: Dict[str, List[int]]
    class_names: List[str]             # the `label` feature's names
    image_size: int                    # side of the stored square images, pixels

    @property
    def splits(self) -> List[str]:
        return list(self.files)

    def num_examples(self, split: str) -> int:
        """Examples of `split`; unknown splits raise KeyError naming the valid ones."""
        if split not in self.files:
            raise KeyError(f"split {split!r} is not in {self.name} ({self.directory}); "
                           f"valid splits: {sorted(self.files)}")
        return sum(self.shard_lengths[split])

    def split_source(self, split: str) -> "SplitSource":
        """Random access to `split`'s serialized examples, in the order TFDS wrote them."""
        self.num_examples(split)   # names the valid splits if unknown
        return SplitSource([records.RecordFile(p) for p in self.files[split]])


class SplitSource:
    """The records of a split's shards as one sequence: source[i] -> serialized example."""

    def __init__(self, files: Sequence[records.RecordFile]):
        self.files = list(files)
        self.starts = np.cumsum([0] + [len(f) for f in self.files])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> bytes:
        if not 0 <= i < len(self):
            raise IndexError(f"record {i} of {len(self)}")
        shard = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.files[shard][i - int(self.starts[shard])]


def _versions(folder: str) -> List[Tuple[Tuple[int, ...], str]]:
    found = []
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        parts = entry.split(".")
        if (len(parts) == 3 and all(p.isdigit() for p in parts)
                and os.path.isfile(os.path.join(folder, entry, INFO_FILE))):
            found.append((tuple(int(p) for p in parts), entry))
    return sorted(found)


def _default_config(data_dir: str, base: str) -> Optional[str]:
    path = os.path.join(data_dir, base, ".config", "metadata.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f).get("default_config_name")
    return None


def find(name: str, data_dir: str) -> BuiltDataset:
    """The built dataset NAME[/CONFIG][:VERSION] under `data_dir` (its newest complete
    version when none is named).

    Raises FileNotFoundError when no complete build (one with dataset_info.json) is there.
    """
    data_dir = os.path.expanduser(data_dir)
    spec, _, version = name.partition(":")
    base, _, config = spec.partition("/")
    config = config or _default_config(data_dir, base) or ""
    folder = os.path.join(data_dir, base, config)
    versions = [v for _, v in _versions(folder)]
    if version:
        versions = [v for v in versions if v == version]
    if not versions:
        raise FileNotFoundError(f"dataset {name!r} is not built in {data_dir} (no "
                                f"{folder}/VERSION/{INFO_FILE})")
    directory = os.path.join(folder, versions[-1])
    with open(os.path.join(directory, INFO_FILE)) as f:
        info = json.load(f)
    with open(os.path.join(directory, FEATURES_FILE)) as f:
        features = json.load(f)["featuresDict"]["features"]
    file_format = info.get("fileFormat", "tfrecord")
    if file_format != "tfrecord":
        raise ValueError(f"{directory}: records are {file_format!r}; fer_jax reads 'tfrecord'")
    files, lengths = {}, {}
    for split in info["splits"]:
        shards = [int(n) for n in split["shardLengths"]]
        template = split.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
        files[split["name"]] = [os.path.join(directory, template.format(
            DATASET=info["name"], SPLIT=split["name"], FILEFORMAT=file_format,
            SHARD_X_OF_Y=f"{i:05d}-of-{len(shards):05d}", SHARD_INDEX=f"{i:05d}",
            NUM_SHARDS=f"{len(shards):05d}")) for i in range(len(shards))]
        lengths[split["name"]] = shards
    labels = os.path.join(directory, "label.labels.txt")
    with open(labels, encoding="utf-8") as f:
        class_names = [line.strip() for line in f if line.strip()]
    side = int(features["image"]["image"]["shape"]["dimensions"][0])
    return BuiltDataset(spec if "/" in spec else f"{base}/{config}", directory,
                        versions[-1], files, lengths, class_names, side)


def _imdecode(data: bytes, flags: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise ValueError("a record's image could not be decoded")
    return image


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded JPEG or PNG bytes -> (H, W, 3) uint8 RGB, the pixels TFDS decodes."""
    if data[:2] == b"\xff\xd8":
        # TensorFlow decodes JPEG with the fast integer DCT (JDCT_IFAST) and fancy
        # upsampling; OpenCV and Pillow use the accurate DCT, a few levels away.
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
    # Stored crops are upright: an EXIF orientation tag must not turn them.
    image = _imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_heatmap(data: bytes) -> np.ndarray:
    """Encoded PNG bytes of a stored AU heatmap -> (H, W) uint8."""
    return _imdecode(data, cv2.IMREAD_GRAYSCALE)


def decode(serialized: bytes) -> Dict[str, Any]:
    """One serialized fer_jax example (data_prep/builders/features.py) -> arrays:
    image (S, S, 3) uint8 RGB, heatmap (S, S) uint8, heatmap_valid bool, label int32,
    landmarks (68, 2) float32, landmark_source int32, id str."""
    ex = records.parse_example(serialized)
    return decode_parsed(ex, decode_rgb(ex["image"][0]), decode_heatmap(ex["heatmap"][0]))


def decode_parsed(ex: Dict[str, Any], image: np.ndarray, heatmap: np.ndarray
                  ) -> Dict[str, Any]:
    """A parsed example (records.parse_example) with its decoded image and heatmap -> the
    arrays `decode` returns (the decoding steps apart, for fer_jax.input_benchmark)."""
    return {
        "image": image,
        "heatmap": heatmap,
        "heatmap_valid": np.bool_(ex["heatmap_valid"][0]),
        "label": np.int32(ex["label"][0]),
        "landmarks": np.asarray(ex["landmarks"], np.float32).reshape(-1, 2),
        "landmark_source": np.int32(ex["landmark_source"][0]),
        "id": ex["id"][0].decode("utf-8"),
    }
