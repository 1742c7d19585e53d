"""A run's workdir as a thing to reopen: run.json at the start, the model back for inference.

Training writes `run.json` before its first step: the full config and what a
user of the trained model needs without the dataset (class names, image size,
normalisation and crop rule (`input`, a data_prep.faces.InputRule), aligned layers,
cam layer, fer_jax version). `restore` rebuilds the model and its variables
(parameters and BatchNorm statistics, no optimiser state) from run.json and the
latest checkpoint, or from the folder's `weights.npz` (the models shipped in
fer_jax/pretrained).
"""
import json
import os
from importlib import metadata
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from data_prep import faces
from fer_jax import checkpoints, config_schema, models
from fer_jax.models import registry as backbones
from fer_jax.models.contract import ExplainableModel

RUN_JSON = "run.json"
# A run folder whose variables are one fer_jax.weights file instead of checkpoints/.
WEIGHTS_FILE = "weights.npz"
_FORMAT = 1


def version() -> str:
    try:
        return metadata.version("fer_jax")
    except metadata.PackageNotFoundError:   # running from a source tree without install
        return "unknown"


def write(workdir: str, config: ml_collections.ConfigDict, class_names: Sequence[str],
          model: ExplainableModel, record_size: int) -> str:
    """Writes WORKDIR/run.json (process 0 only); returns its path.

    record_size: side of the dataset's stored face crops, which the evaluation
    pipeline resizes to config.dataset.image_size (predict crops photos at it).
    """
    from data_prep.faces import IMAGENET_MEAN, IMAGENET_STD   # the one normalisation
    info = {
        "format": _FORMAT,
        "fer_jax_version": version(),
        "model": dict(config.model.to_dict()),
        "class_names": list(class_names),
        "image_size": config.dataset.image_size,
        "record_size": int(record_size),
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "input": faces.InputRule(mean=tuple(IMAGENET_MEAN),
                                 std=tuple(IMAGENET_STD)).to_json(),
        "aligned_layers": list(config.align.layers),
        "cam_layer": model.cam_layer,
        "dataset": config.dataset.name,
        "config": config.to_dict(),
    }
    path = os.path.join(workdir, RUN_JSON)
    with open(path, "w") as f:
        json.dump(info, f, indent=2)
    return path


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the config schema uses."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def read(workdir: str) -> Dict[str, Any]:
    """The run.json of `workdir` (config as a ConfigDict under "config").

    Runs made before run.json existed are read from their results.json config.
    Raises FileNotFoundError saying what is missing.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    path = os.path.join(workdir, RUN_JSON)
    if os.path.exists(path):
        with open(path) as f:
            info = json.load(f)
    elif os.path.exists(os.path.join(workdir, "results.json")):
        with open(os.path.join(workdir, "results.json")) as f:
            info = {"config": json.load(f)["config"]}
    else:
        raise FileNotFoundError(
            f"{workdir} is not a fer_jax run: it has no {RUN_JSON} (written when training "
            "starts); train first: python -m fer_jax.main --config=configs/default.py "
            f"--workdir={workdir}")
    info["config"] = config_schema.with_new_fields(
        ml_collections.ConfigDict(_tuples(info["config"])))
    return info


class Restored(NamedTuple):
    """A trained model ready for inference."""
    model: ExplainableModel      # linen module (eval mode: BatchNorm uses running stats)
    variables: Dict[str, Any]    # {"params", "batch_stats"} as NumPy arrays
    step: int                    # the checkpoint's training step (0 for a weights file)
    class_names: List[str]
    config: ml_collections.ConfigDict
    record_size: int             # side of the face crops the model was trained on
    input_rule: faces.InputRule = faces.InputRule()   # crop rule, colour, normalisation


def restore(workdir: str, overrides: Optional[Mapping[str, Any]] = None) -> Restored:
    """Model and variables of the latest checkpoint of `workdir` (or of its WEIGHTS_FILE
    when it has no checkpoints/), without dataset or optimiser.

    overrides: {"model.dtype": "bfloat16", ...} applied to the run's config first (a key
    it lacks, or a bad value, is a ConfigError naming it; only the overridden fields are
    checked: a shipped model's config names no dataset of ours).
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    info = read(workdir)
    config = info["config"]
    if overrides:
        from fer_jax import cli
        config_schema.check_values(overrides)
        cli.apply_overrides(config, overrides)
    class_names = info.get("class_names")
    if class_names is None:   # an old run: the dataset knows its classes
        from fer_jax import input_pipeline
        class_names = input_pipeline.get_dataset(config.dataset,
                                                 build_if_missing=False).class_names
    model = models.create_model(config.model, len(class_names))
    size = config.dataset.image_size
    weights_path = os.path.join(workdir, WEIGHTS_FILE)
    variables: Dict[str, Any]
    if os.path.isfile(weights_path) and not os.path.isdir(os.path.join(workdir, "checkpoints")):
        from fer_jax import weights
        loaded, saved_name = weights.load(weights_path)
        if saved_name != config.model.name:
            raise ValueError(f"{weights_path} holds {saved_name!r} weights, but {RUN_JSON} "
                             f"names model {config.model.name!r}")
        variables = {k: loaded[k] for k in ("params", "batch_stats") if k in loaded}
        step = int(info.get("step", 0))
    else:
        template = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                     jnp.zeros((1, size, size, 3)), train=False))
        variables, step = checkpoints.restore_variables(os.path.join(workdir, "checkpoints"),
                                                        template)
    return Restored(model, variables, step, list(class_names), config,
                    int(info.get("record_size", size)),
                    faces.InputRule.from_json(info.get("input", {})))


def from_weights(path: str, model_name: Optional[str] = None,
                 class_names: Optional[Sequence[str]] = None, image_size: int = 224,
                 large_maps: bool = True, vit_head: str = "gap") -> Restored:
    """A model from a converted weights file (`python -m fer_jax.convert_weights` output).

    The file names its model; `model_name` must agree when given. ResNet width
    and the number of classes are read off the tensors; settings a file cannot
    tell (large_maps, vit_head) are arguments. class_names default to the
    canonical expressions (docs/method.md, "Classes") for the head's size.
    """
    from data_prep import codebook
    from fer_jax import config_schema, errors, weights
    variables, saved_name = weights.load(path)
    if model_name is not None and model_name != saved_name:
        raise errors.ConfigError(
            f"{path} holds {saved_name!r} weights, not {model_name!r}")
    params = variables["params"]
    num_classes = int(params["head"]["kernel"].shape[-1])
    names = list(class_names) if class_names else list(codebook.EXPRESSIONS[:num_classes])
    if len(names) != num_classes:
        raise errors.ConfigError(
            f"{len(names)} class names for a head of {num_classes} classes: {names}")
    config = config_schema.defaults()
    config.model.name = saved_name
    config.model.large_maps = large_maps
    config.model.vit_head = vit_head
    config.dataset.image_size = image_size
    backbone = backbones.get(saved_name, what=f"{path}: model")
    backbone.family.settings_from_params(config.model, params, backbone.constructor)
    config_schema.validate(config)
    model = models.create_model(config.model, num_classes)
    return Restored(model, {k: variables[k] for k in ("params", "batch_stats") if k in variables},
                    0, names, config, image_size)
