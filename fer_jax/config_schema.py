"""Every config field: its default, a one-line meaning and a check.

Config files (`configs/*.py`) start from `defaults()` and change values; they
never add keys. `validate(config)` runs before anything else and fails with a
message naming the bad key and what is allowed.
"""
import dataclasses
from typing import Any, Callable, Dict, Optional, Union

import ml_collections


class ConfigError(ValueError):
    """A config value (or a name derived from it) is not valid; the message names it.

    The CLIs print the message alone (no traceback) and exit with status 2.
    """

Check = Callable[[Any], Optional[str]]  # value -> error text, or None when fine


@dataclasses.dataclass(frozen=True)
class Field:
    default: Any
    doc: str
    check: Check


def one_of(*choices: Any) -> Check:
    return lambda v: None if v in choices else f"must be one of {list(choices)}"


def number(lo: float = float("-inf"), hi: float = float("inf"), integer: bool = False,
           lo_open: bool = False) -> Check:
    def check(v):
        kind = int if integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, kind):
            return f"must be {'an integer' if integer else 'a number'}"
        if v < lo or v > hi or (lo_open and v == lo):
            return f"must be in {'(' if lo_open else '['}{lo}, {hi}]"
        return None
    return check


def boolean(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else "must be True or False"


def string(v: Any) -> Optional[str]:
    return None if isinstance(v, str) else "must be a string"


def string_tuple(v: Any) -> Optional[str]:
    ok = isinstance(v, (tuple, list)) and len(v) > 0 and all(isinstance(s, str) for s in v)
    return None if ok else "must be a non-empty tuple of strings"


def optional_string_tuple(v: Any) -> Optional[str]:
    ok = isinstance(v, (tuple, list)) and all(isinstance(s, str) for s in v)
    return None if ok else "must be a tuple of strings (empty for the default)"


def cam_methods(v: Any) -> Optional[str]:
    error = optional_string_tuple(v)
    if error:
        return error
    from fer_jax import cams  # the registry of methods
    valid = set(cams.REGISTRY) | set(cams.base.SETS)
    bad = [name for name in v if name not in valid]
    return None if not bad else (f"names an unknown CAM method {bad[0]!r}; valid: "
                                 f"{sorted(cams.REGISTRY)} (or a set: {list(cams.base.SETS)})")


def insertion_blur(v: Any) -> Optional[str]:
    error = number(-1, 1)(v)
    if error or v == -1 or v >= 0:
        return error
    return "must be -1 (RISE's blur), 0 (the mean colour) or a fraction in (0, 1]"


def number_tuple(length: int) -> Check:
    def check(v):
        ok = (isinstance(v, (tuple, list)) and len(v) == length
              and all(isinstance(x, (int, float)) and x >= 0 for x in v))
        return None if ok else f"must be a tuple of {length} non-negative numbers"
    return check


def dataset_name(v: Any) -> Optional[str]:
    if not isinstance(v, str):
        return "must be a string like 'synthetic_faces/small'"
    try:
        from data_prep import builders  # registry of datasets we can build
    except ImportError as e:
        # The offline tools' dependencies (TensorFlow Datasets, OpenCV) are missing,
        # e.g. the benchmark on a bare accelerator host: no records can be read
        # there either, so there is nothing to check the name against.
        if (e.name or "").split(".")[0] in ("data_prep", "fer_jax"):
            raise
        return None
    base = v.split("/")[0]
    return None if base in builders.BUILDERS else (
        f"names an unknown dataset {base!r}; valid: {sorted(builders.BUILDERS)}")


def model_name(v: Any) -> Optional[str]:
    from fer_jax import models
    return None if v in models.MODELS else f"must be one of {sorted(models.MODELS)}"


SCHEMA: Dict[str, Union[Field, dict]] = {
    "dataset": {
        "name": Field("synthetic_faces/small", "TFDS name[/config] of the records to train on.",
                      dataset_name),
        "data_dir": Field("~/tensorflow_datasets", "Folder of the built TFRecords.", string),
        "manual_dir": Field("", "Manually downloaded files, to build a missing real dataset.",
                            string),
        "train_split": Field("train", "Split used for training.", string),
        "eval_split": Field("test", "Split evaluated at the end (results.json).", string),
        "image_size": Field(64, "Model input size in pixels (records are resized if needed).",
                            number(16, 1024, integer=True)),
    },
    "input": {
        "augment": Field(True, "Apply the paper's train augmentations.", boolean),
        "rotation_deg": Field(6.0, "Max random rotation in degrees (image and heatmap).",
                              number(0, 180)),
        "rotation_prob": Field(0.5, "Probability of a random rotation.", number(0, 1)),
        "crop_scale_min": Field(0.8, "Random resized crop: smallest area fraction.",
                                number(0.05, 1, lo_open=False)),
        "hflip": Field(True, "Random horizontal flip (image and heatmap).", boolean),
        "grayscale_prob": Field(0.2, "Probability of converting the image to grey.",
                                number(0, 1)),
        "color_jitter": Field((0.4, 0.4, 0.4, 0.1),
                              "Brightness, contrast, saturation, hue jitter strengths.",
                              number_tuple(4)),
        "color_jitter_prob": Field(0.8, "Probability of colour jitter.", number(0, 1)),
        "erase_prob": Field(0.5, "Probability of random erasing (image only).", number(0, 1)),
        "shuffle_buffer": Field(10_000, "Examples in the shuffle buffer.",
                                number(1, integer=True)),
        "cache": Field(True, "Cache decoded records in memory (small datasets).", boolean),
    },
    "model": {
        "name": Field("resnet18", "Architecture, from fer_jax.models.MODELS.", model_name),
        "width": Field(64, "ResNet stem channels (64 = standard; smaller is faster).",
                       number(1, 1024, integer=True)),
        "large_maps": Field(True, "ResNet: stride 1 in stage3/4 (the paper's CAM setting).",
                            boolean),
        "dtype": Field("float32", "Compute dtype ('bfloat16' = mixed precision).",
                       one_of("float32", "bfloat16")),
        "vit_head": Field("gap", "ViT head: 'gap' (mean of patch tokens, CAM-ready), 'token', or "
                          "'tscam' (TS-CAM: conv class maps x class-token attention).",
                          one_of("gap", "token", "tscam")),
        "vit_pos_size": Field(224, "ViT: image size of the stored position-embedding grid "
                              "(the pretraining size; resampled to other inputs).",
                              number(8, 4096, integer=True)),
        "dropout": Field(0.0, "ViT dropout rate.", number(0, 1)),
        "drop_path": Field(0.0, "ViT stochastic depth of the last block.", number(0, 1)),
        # Training-time CAM methods (docs/method.md, "Training-time methods").
        "head": Field("gap", "ResNet head: 'gap' (linear on the global average: CAM), or a CAM "
                      "head 'wildcat', 'acol', 'prm' (its built-in map is a CAM method).",
                      one_of("gap", "wildcat", "acol", "prm")),
        "wildcat_modalities": Field(5, "WILDCAT: class maps per class, averaged.",
                                    number(1, 64, integer=True)),
        "wildcat_kmax": Field(0.5, "WILDCAT: fraction of positions pooled from the top.",
                              number(0, 1, lo_open=True)),
        "wildcat_kmin": Field(0.1, "WILDCAT: fraction of positions pooled from the bottom "
                              "(0 = none).", number(0, 1)),
        "wildcat_alpha": Field(0.6, "WILDCAT: weight of the bottom positions' mean.", number(0)),
        "acol_threshold": Field(0.1, "ACoL: erase where the first branch's [0, 1] map is >= this.",
                                number(0, 1)),
        "adl": Field(False, "ResNet: ADL layers (training only) after the first block of stage3, "
                     "the first and the last block of stage4.", boolean),
        "adl_drop_rate": Field(0.4, "ADL: probability of the drop mask (else importance map).",
                               number(0, 1)),
        "adl_threshold": Field(0.1, "ADL: drop where the channel mean is >= this x its max.",
                               number(0, 1)),
    },
    "align": {
        "weight": Field(4.0, "lambda: weight of the AU alignment loss (0 = CE only).",
                        number(0)),
        "layers": Field(("stage4",), "Named layers whose attention is aligned.", string_tuple),
    },
    "optim": {
        "name": Field("sgd", "'sgd' (nesterov momentum, the paper) or 'adamw'.",
                      one_of("sgd", "adamw")),
        "learning_rate": Field(0.002, "Peak learning rate.", number(0, lo_open=True)),
        "momentum": Field(0.9, "SGD momentum (nesterov).", number(0, 1)),
        "weight_decay": Field(5e-4, "Weight decay (L2 for SGD, decoupled for AdamW).",
                              number(0)),
        "schedule": Field("step", "'step' (x decay_factor every decay_epochs), 'cosine' or "
                          "'constant'.", one_of("step", "cosine", "constant")),
        "decay_epochs": Field(4.0, "Step schedule: epochs between decays.",
                              number(0, lo_open=True)),
        "decay_factor": Field(0.9, "Step schedule: multiplier at each decay.", number(0, 1)),
        "warmup_epochs": Field(0.0, "Linear warmup length in epochs.", number(0)),
    },
    "train": {
        "batch_size": Field(64, "Global batch size (divisible by the device count).",
                            number(1, integer=True)),
        "num_epochs": Field(20.0, "Training length in epochs.", number(0, lo_open=True)),
        "seed": Field(0, "Seed of initialisation and data order.", number(0, integer=True)),
        "cutmix_prob": Field(0.0, "CutMix: probability that a batch is box-mixed, images, labels "
                             "and AU maps (0 = off; the paper's CutMix row: 1).", number(0, 1)),
        "cutmix_beta": Field(1.0, "CutMix: the mixing ratio is drawn from Beta(beta, beta).",
                             number(0, lo_open=True)),
        "log_every_steps": Field(50, "Steps between TensorBoard scalars.",
                                 number(1, integer=True)),
        "checkpoint_every_steps": Field(500, "Steps between checkpoints (and one at the end).",
                                        number(1, integer=True)),
        "keep_checkpoints": Field(2, "Checkpoints kept on disk.", number(1, integer=True)),
        "max_steps_per_run": Field(0, "Stop (checkpoint saved, exit status 75) after this many "
                                   "steps; run again to continue (0 = no limit).",
                                   number(0, integer=True)),
        "progress_bar": Field(True, "Show a tqdm progress bar (process 0).", boolean),
    },
    "eval": {
        "batch_size": Field(128, "Global evaluation batch size.", number(1, integer=True)),
        "num_plot_images": Field(16, "Test images in the attention/CAM pictures (0 = none).",
                                 number(0, 256, integer=True)),
        "cam_methods": Field(("paper",), "CAM methods to evaluate (fer_jax.cams.REGISTRY) or "
                             "sets: 'paper' (the paper's maps + reference rows), 'all' (every "
                             "method that applies); () = ('paper',).", cam_methods),
        "cam_layers": Field((), "Layers of the per-layer CAM methods (maps averaged over them); "
                            "() = the model's cam layer.", optional_string_tuple),
        "aug_smooth": Field(False, "CAMs averaged over flip x {1, 0.9, 1.1} input scaling "
                            "(pytorch-grad-cam's aug_smooth).", boolean),
        "eigen_smooth": Field(False, "CAMs from the first principal component of the weighted "
                              "activations instead of their sum.", boolean),
        "score_cam_batch": Field(256, "Score-CAM: masked images per forward pass.",
                                 number(1, integer=True)),
        "faithfulness_examples": Field(256, "Deletion/insertion on a fixed random subset of "
                                       "this many examples of the split (0 = all).",
                                       number(0, integer=True)),
        "insertion_blur": Field(0.125, "Insertion's start image: Gaussian blur, sigma as a "
                                "fraction of the image side (0 = the mean colour, -1 = RISE's "
                                "5 px at 224 px).", insertion_blur),
        "faithfulness_steps": Field(16, "Deletion/insertion steps per map (0 = skip the "
                                    "faithfulness metrics).", number(0, 1024, integer=True)),
    },
    "spmd": Field(False, "Run the step under jit + shard_map on a device mesh instead of pmap.",
                  boolean),
    "init_from": Field("", "Pretrained weights file to start from ('' = random init).", string),
}


def _build(schema: dict) -> ml_collections.ConfigDict:
    out = ml_collections.ConfigDict()
    for key, value in schema.items():
        out[key] = _build(value) if isinstance(value, dict) else value.default
    return out


def defaults() -> ml_collections.ConfigDict:
    """A config holding every field at its default (configs/*.py start here)."""
    return _build(SCHEMA)


def with_new_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` plus, at their defaults, the fields it lacks: a run.json written by an
    older fer_jax (before those fields existed) reopens as that run. Unknown keys stay,
    so validate() still names them."""
    out = ml_collections.ConfigDict(config.to_dict())

    def fill(group: ml_collections.ConfigDict, schema: dict) -> None:
        for key, spec in schema.items():
            if key not in group:
                group[key] = _build(spec) if isinstance(spec, dict) else spec.default
            elif isinstance(spec, dict) and hasattr(group[key], "keys"):
                fill(group[key], spec)
    fill(out, SCHEMA)
    return out


def _validate(config: Any, schema: dict, prefix: str) -> None:
    keys = set(config.keys())
    unknown = sorted(keys - set(schema))
    if unknown:
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!s}; valid keys of {where}: "
                         f"{sorted(schema)}")
    for key, spec in schema.items():
        if key not in keys:
            raise ConfigError(f"config key {prefix}{key} is missing (start configs from "
                             "fer_jax.config_schema.defaults())")
        value = config[key]
        if isinstance(spec, dict):
            if not hasattr(value, "keys"):
                raise ConfigError(f"config.{prefix}{key} must be a group of keys {sorted(spec)}")
            _validate(value, spec, f"{prefix}{key}.")
            continue
        error = spec.check(value)
        if error:
            raise ConfigError(f"config.{prefix}{key}={value!r} {error} ({spec.doc})")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first unknown key, missing key or bad value."""
    _validate(config, SCHEMA, "")
    if config.train.batch_size % _device_count() != 0:
        raise ConfigError(f"config.train.batch_size={config.train.batch_size} must be divisible "
                         f"by the number of devices ({_device_count()})")
    if config.eval.batch_size % _device_count() != 0:
        raise ConfigError(f"config.eval.batch_size={config.eval.batch_size} must be divisible "
                         f"by the number of devices ({_device_count()})")
    _check_training_time_methods(config.model)


def _check_training_time_methods(model: ml_collections.ConfigDict) -> None:
    """Heads and layers that only exist in one model family (ConfigError naming the keys)."""
    resnet = model.name.startswith("resnet")
    if not resnet and model.head != "gap":
        raise ConfigError(f"config.model.head={model.head!r} is a ResNet head, but config.model."
                          f"name={model.name!r}; ViT heads are set by config.model.vit_head "
                          "('tscam' for TS-CAM)")
    if not resnet and model.adl:
        raise ConfigError(f"config.model.adl=True inserts layers between ResNet blocks, but "
                          f"config.model.name={model.name!r}")
    if resnet and model.vit_head == "tscam":
        raise ConfigError(f"config.model.vit_head='tscam' is a ViT/DeiT head, but config.model."
                          f"name={model.name!r}; ResNet heads are set by config.model.head")


def _device_count() -> int:
    import jax
    return jax.device_count()


def describe() -> str:
    """All fields, defaults and meanings, one per line (for --help-like output)."""
    lines = []

    def walk(schema, prefix):
        for key, spec in schema.items():
            if isinstance(spec, dict):
                walk(spec, f"{prefix}{key}.")
            else:
                lines.append(f"{prefix}{key} = {spec.default!r}  # {spec.doc}")
    walk(SCHEMA, "")
    return "\n".join(lines)
