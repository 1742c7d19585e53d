"""An exported fer_jax model (`python -m fer_jax.export`), run with jax and NumPy alone.

  from fer_jax import serving
  model = serving.load("exported/")                 # model.jax + contract.json
  x = model.normalise(faces)                        # (B, S, S, 3) uint8 RGB crops -> float32
  probabilities, maps = model(x)                    # (B, K), {method: (B, S, S)}
  print(model.class_names[probabilities[0].argmax()], sorted(maps))

The folder holds the serialised `jax.export` artifact (StableHLO of the whole
inference function, batch dimension symbolic, CAM backward pass included) and
the contract that says how to feed it (contract.json, see fer_jax.export).
This module imports nothing of fer_jax but the package itself (no Flax, Optax,
Orbax, TensorFlow, data_prep), so a server needs only `pip install jax numpy`
and the two files; the face crop itself (detector, landmarks, resize) is the
caller's, following the contract's crop rule.
"""
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np

ARTIFACT = "model.jax"        # jax.export.Exported.serialize() bytes
CONTRACT = "contract.json"    # inputs, outputs, classes, preprocessing (fer_jax.export)
FORMAT = 1                    # contract.json "format": bumped when its meaning changes
# ITU-R BT.601 luma: the grey of a model trained on grey faces (data_prep.faces.LUMA).
_LUMA = (0.299, 0.587, 0.114)


class Served:
    """An exported model: call it on normalised faces for probabilities and CAMs.

    contract: the folder's contract.json; class_names: the K outputs in order;
    image_size: S; methods: the CAM methods whose maps it returns, in order;
    batch_size: the one batch size it takes, or None for any (the default export).
    """

    def __init__(self, exported: Any, contract: Dict[str, Any]):
        self.exported = exported              # jax.export.Exported
        self.contract = contract
        self.class_names: List[str] = list(contract["class_names"])
        self.image_size = int(contract["input"]["image_size"])
        self.methods: List[str] = list(contract["outputs"]["maps"]["methods"])
        self.batch_size: Optional[int] = contract["input"]["shape"][0]   # None: any
        # One compilation per batch size, cached by jit.
        self._call = jax.jit(exported.call)

    def __call__(self, images: Any) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """images: (B, S, S, 3) float32 (B = batch_size if fixed), normalised as the contract's input says (normalise).
        Returns probabilities (B, K) float32 summing to 1, and {method: (B, S, S) float32
        in [0, 1]}: each method's map of the predicted class (the argmax)."""
        x = np.asarray(images, np.float32)
        s = self.image_size
        b = self.batch_size
        if (x.ndim != 4 or x.shape[1:] != (s, s, 3) or x.shape[0] < 1
                or (b is not None and x.shape[0] != b)):
            raise ValueError(f"images of shape {x.shape}; expected ({b or 'B'}, {s}, {s}, 3)"
                             + ("" if b else " with B >= 1"))
        probabilities, maps = jax.device_get(self._call(x))
        return np.asarray(probabilities), {m: np.asarray(maps[m]) for m in self.methods}

    def normalise(self, faces: Any) -> np.ndarray:
        """Face crops already at the model's size -> its input, by the contract's rule.

        faces: (B, S, S, 3) RGB, uint8 in [0, 255] or float in [0, 1], cropped by the
        contract's crop rule and resized to S (antialiased) by the caller.
        Returns float32 (B, S, S, 3): grey (luma in all three channels) if the rule says
        so, then (x - mean) / std per channel.
        """
        x = np.asarray(faces)
        x = x.astype(np.float32) * np.float32(1 / 255) if x.dtype == np.uint8 \
            else x.astype(np.float32)
        rule = self.contract["input"]
        if rule["grey"]:
            x = np.repeat((x @ np.asarray(_LUMA, np.float32))[..., None], 3, axis=-1)
        return (x - np.asarray(rule["mean"], np.float32)) / np.asarray(rule["std"], np.float32)


def load(folder: str) -> Served:
    """The exported model in `folder` (written by `python -m fer_jax.export`).

    Raises FileNotFoundError naming a missing file, ValueError for a contract of
    another format.
    """
    paths = [os.path.join(folder, name) for name in (ARTIFACT, CONTRACT)]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: {folder} is not an exported fer_jax "
                                    "model (python -m fer_jax.export --output=DIR writes one)")
    with open(paths[1]) as f:
        contract = json.load(f)
    if contract.get("format") != FORMAT:
        raise ValueError(f"{paths[1]} has format {contract.get('format')!r}; this fer_jax "
                         f"reads format {FORMAT}")
    with open(paths[0], "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    return Served(exported, contract)
