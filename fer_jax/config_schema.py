"""Every config field: its default, a one-line meaning and a check.

Config files (`configs/*.py`) start from `defaults()` and change values; they
never add keys. `validate(config)` runs before anything else and fails with a
message naming the bad key and what is allowed.
"""
from typing import Any, Dict, List, Mapping, Optional, Union

import ml_collections

from fer_jax import methods
from fer_jax.errors import ConfigError  # noqa: F401  (config_schema.ConfigError, as before)
from fer_jax.fields import (  # noqa: F401  (the checks, importable from here as before)
    Check, Field, boolean, number, number_tuple, one_of, optional_string_tuple, string,
    string_tuple)
from fer_jax.models import registry as backbones


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


def dataset_name(v: Any) -> Optional[str]:
    if not isinstance(v, str):
        return "must be a string like 'synthetic_faces/small'"
    from data_prep import names  # the datasets data_prep builds (no TFDS needed to ask)
    base = v.split("/")[0].split(":")[0]
    return None if base in names.DATASETS else (
        f"names an unknown dataset {base!r}; valid: {sorted(names.DATASETS)}")


def model_name(v: Any) -> Optional[str]:
    return None if v in backbones.BACKBONES else f"must be one of {sorted(backbones.BACKBONES)}"


def head_name(key: str) -> Check:
    """A head selected by config `key`: a family's own, or a training-time method's."""
    def check(v: Any) -> Optional[str]:
        valid = head_choices(key)
        return None if v in valid else f"must be one of {valid}"
    return check


def head_choices(key: str) -> List[str]:
    """The heads config `key` may select, from the backbone and the method registries."""
    return backbones.heads(key) + methods.heads(key)


# The fields of fer_jax itself; `schema()` adds the options of the training-time methods.
_BASE: Dict[str, Union[Field, dict]] = {
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
        "workers": Field(0, "Processes decoding and augmenting batches (Grain); 0: threads "
                         "of the training process (the data do not depend on it).",
                         number(0, 256, integer=True)),
    },
    "model": {
        "name": Field("resnet18", "Architecture, from fer_jax.models.registry.BACKBONES.",
                      model_name),
        "width": Field(64, "ResNet stem channels (64 = standard; smaller is faster).",
                       number(1, 1024, integer=True)),
        "large_maps": Field(True, "ResNet: stride 1 in stage3/4 (the paper's CAM setting).",
                            boolean),
        "dtype": Field("float32", "Compute dtype ('bfloat16' = mixed precision).",
                       one_of("float32", "bfloat16")),
        "vit_head": Field("gap", "ViT head: 'gap' (mean of patch tokens, CAM-ready), 'token', or "
                          "a training-time method's head (fer_jax.methods: "
                          f"{methods.heads('model.vit_head')}).", head_name("model.vit_head")),
        "vit_pos_size": Field(224, "ViT: image size of the stored position-embedding grid "
                              "(the pretraining size; resampled to other inputs).",
                              number(8, 4096, integer=True)),
        "dropout": Field(0.0, "ViT dropout rate.", number(0, 1)),
        "drop_path": Field(0.0, "ViT stochastic depth of the last block.", number(0, 1)),
        # Training-time CAM methods (docs/method.md, "Training-time methods"); their
        # options follow, from fer_jax.methods.
        "head": Field("gap", "ResNet head: 'gap' (linear on the global average: CAM), or a "
                      f"training-time method's head (fer_jax.methods: "
                      f"{methods.heads('model.head')}; its built-in map is a CAM method).",
                      head_name("model.head")),
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
        "faithfulness_steps": Field(12, "Deletion/insertion steps per map (0 = skip the "
                                    "faithfulness metrics).", number(0, 1024, integer=True)),
    },
    "spmd": Field(False, "Run the step under jit + shard_map on a device mesh instead of pmap.",
                  boolean),
    "init_from": Field("", "Pretrained weights file to start from ('' = random init).", string),
}


def schema() -> Dict[str, Union[Field, dict]]:
    """Every field: fer_jax's own and, at the end of their groups, the options of the
    registered training-time methods (fer_jax.methods), so a method registered later
    has its fields too. Also readable as `config_schema.SCHEMA`."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in _BASE.items()}
    for option in methods.base.options():
        group, leaf = option.key.split(".")
        fields = out.get(group)
        if not isinstance(fields, dict) or leaf in fields:
            raise ValueError(f"training-time method option {option.key!r}: the group must "
                             "exist and the key must be new")
        fields[leaf] = option.field
    return out


def __getattr__(name: str) -> Any:
    if name == "SCHEMA":
        return schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build(schema: dict) -> ml_collections.ConfigDict:
    out = ml_collections.ConfigDict()
    for key, value in schema.items():
        out[key] = _build(value) if isinstance(value, dict) else value.default
    return out


def defaults() -> ml_collections.ConfigDict:
    """A config holding every field at its default (configs/*.py start here)."""
    return _build(schema())


# Fields older versions had, and why they went: dropped when an old run.json is reopened.
REMOVED = {
    ("input", "shuffle_buffer"): "the Grain pipeline shuffles whole shards (no buffer)",
    ("input", "cache"): "the Grain pipeline reads records at random (no cache)",
}


def with_new_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` plus, at their defaults, the fields it lacks, less the REMOVED ones: a
    run.json written by an older fer_jax reopens as that run. Unknown keys stay,
    so validate() still names them."""
    out = ml_collections.ConfigDict(config.to_dict())
    for group, key in REMOVED:
        if group in out and key in out[group]:
            del out[group][key]

    def fill(group: ml_collections.ConfigDict, schema: dict) -> None:
        for key, spec in schema.items():
            if key not in group:
                group[key] = _build(spec) if isinstance(spec, dict) else spec.default
            elif isinstance(spec, dict) and hasattr(group[key], "keys"):
                fill(group[key], spec)
    fill(out, schema())
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


def field_at(key: str) -> Field:
    """The schema's Field of a dotted key ("model.dtype"); a ConfigError naming the first
    unknown part, where it was looked for and the valid keys there, or a group."""
    node: Any = schema()
    path: List[str] = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(path) or "the top level"
            valid = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(f"unknown key {part!r} in {where}; valid: {valid}")
        node, path = node[part], path + [part]
    if not isinstance(node, Field):
        raise ConfigError(f"{key} is a group, not a field; its keys: {sorted(node)}")
    return node


def check_values(values: Mapping[str, Any]) -> None:
    """Checks {"model.dtype": "bfloat16", ...} field by field (a ConfigError naming the first
    unknown key or bad value): for overrides of a config that is not itself a training
    config, such as a shipped model's run.json."""
    for key, value in values.items():
        try:
            field = field_at(key)
        except ConfigError as e:
            raise ConfigError(f"config.{key}: {e}") from None
        error = field.check(value)
        if error:
            raise ConfigError(f"config.{key}={value!r} {error} ({field.doc})")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first unknown key, missing key or bad value."""
    _validate(config, schema(), "")
    if config.train.batch_size % _device_count() != 0:
        raise ConfigError(f"config.train.batch_size={config.train.batch_size} must be divisible "
                         f"by the number of devices ({_device_count()})")
    if config.eval.batch_size % _device_count() != 0:
        raise ConfigError(f"config.eval.batch_size={config.eval.batch_size} must be divisible "
                         f"by the number of devices ({_device_count()})")
    _check_training_time_methods(config)


def _check_training_time_methods(config: ml_collections.ConfigDict) -> None:
    """Methods switched on for a backbone family they do not apply to (ConfigError naming
    the key, the model and where that family's heads are chosen)."""
    family = backbones.get(config.model.name).family
    for method in methods.REGISTRY.values():
        if not method.families or family.name in method.families or not method.is_on(config):
            continue
        titles = " or ".join(backbones.FAMILIES[f].long_title or backbones.FAMILIES[f].title
                             for f in sorted(method.families))
        what = (f"inserts layers between {titles} blocks" if method.insert else
                f"is a {titles} head" if method.head else f"applies to {titles} models")
        key = method.switch[0]
        group, leaf = key.split(".")
        hint = (f"; {family.title} heads are set by config.{family.head_key} (one of "
                f"{head_choices(family.head_key)})" if method.head else "")
        raise ConfigError(f"config.{key}={config[group][leaf]!r} {what}, but config.model.name="
                          f"{config.model.name!r}{hint}")


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
    walk(schema(), "")
    return "\n".join(lines)
