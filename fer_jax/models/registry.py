"""Backbone registry: config.model.name -> its constructor and its family's record.

A family module (resnet.py, vit.py) defines its linen model, registers one
`Family` (how a config becomes the model, the config key of its heads, the
pretrained-weight formats it reads, how a weights file tells its settings, its
timm counterpart) and its variants with `register_backbone`, as timm's
`register_model`. Everything that dispatches on a model name reads BACKBONES:
the config check (fer_jax.config_schema), `create_model`, fer_jax.weights,
fer_jax.runs, fer_jax.convert_weights and fer_jax.benchmark.
"""
import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from fer_jax.errors import ConfigError

Key = Tuple[str, ...]          # (collection, module, ..., leaf), e.g. ("params", "head", "kernel")
# A weights mapping takes (file key, tensor, shape_of) and returns [(model key, value), ...],
# or None when it does not know the key (-> "unexpected"). `shape_of(model key)` gives
# the model's shape (or None) where a split needs it (heads of timm's qkv).
Mapped = Optional[List[Tuple[Key, Any]]]
ShapeOf = Callable[[Key], Optional[Tuple[int, ...]]]


@dataclasses.dataclass(frozen=True)
class WeightFormat:
    """A pretrained-weight file format a family reads (besides fer_jax's own, which all read).

    extension: ".safetensors" or ".npz"; description: for messages;
    prepare(tensors, path) -> (tensors to map, notes on skipped keys): raises ValueError
      when the file is not of this format;
    mapping: (file key, tensor, shape_of) -> Mapped;
    resample: how the source library resamples position embeddings ("bicubic", "bilinear");
    fresh: top-level modules of the model that files of this format never hold (APViT's
      projection of the CNN grid): kept from the initialised variables, reported as
      re-initialised, as the head is when the class count differs.
    """
    extension: str
    description: str
    prepare: Callable[[Mapping[str, Any], str], Tuple[Dict[str, Any], List[str]]]
    mapping: Callable[[str, Any, ShapeOf], Mapped]
    resample: str = "bicubic"
    fresh: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Family:
    """A family of backbones.

    name: key of methods' `families`; title: in messages ("ResNet"); long_title: the
      members in messages ("ViT/DeiT"; "" = title);
    build(constructor, model_config, num_classes, bn_axis_name, dtype) -> linen module;
    head_key: the config key that selects its head ("model.head"), whose choices are
      `heads` (its own) and the training-time head methods switched by that key;
    formats: the pretrained-weight formats it reads (WeightFormat);
    settings_from_params(model_config, params, constructor): sets the config fields a
      weights file determines (ResNet width, ViT position grid) from its params;
    timm_model(config, num_classes) -> (timm model, {layer name: torch module}): its
      PyTorch counterpart for `benchmark --reference=pytorch` (None: none).
    """
    name: str
    title: str
    build: Callable[..., Any]
    head_key: str
    heads: Tuple[str, ...]
    formats: Tuple[WeightFormat, ...] = ()
    settings_from_params: Callable[[Any, Mapping[str, Any], Callable[..., Any]], None] = (
        lambda model_config, params, constructor: None)
    timm_model: Optional[Callable[[Any, int], Tuple[Any, Dict[str, Any]]]] = None
    long_title: str = ""
    prefixes: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    family: Family
    constructor: Callable[..., Any]


FAMILIES: Dict[str, Family] = {}
BACKBONES: Dict[str, Backbone] = {}


def register_family(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"backbone family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def register_backbone(name: str, family: Family, constructor: Callable[..., Any]) -> Backbone:
    """Registers variant `name` of `family`: constructor(num_classes=..., **family settings)."""
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is registered twice")
    BACKBONES[name] = Backbone(name, family, constructor)
    return BACKBONES[name]


def get(name: str, what: str = "config.model.name") -> Backbone:
    """The backbone `name`; a ConfigError names `what`, the bad name and the registered names."""
    if name not in BACKBONES:
        raise ConfigError(f"{what}={name!r} is unknown; valid names: {sorted(BACKBONES)}")
    return BACKBONES[name]


def family_of(name: str, what: str = "config.model.name") -> Family:
    """The family of backbone `name`, or of an unregistered variant named by a family's
    `prefixes`; a ConfigError as `get`'s otherwise."""
    if name not in BACKBONES:
        for family in FAMILIES.values():
            if family.prefixes and name.startswith(family.prefixes):
                return family
    return get(name, what).family


def heads(key: str) -> List[str]:
    """The families' own heads selected by config key `key`, registry order, no repeats."""
    return list(dict.fromkeys(h for f in FAMILIES.values() if f.head_key == key for h in f.heads))


# -- what the families' weight formats share --------------------------------------------

HEAD = "head"   # every family's head module name (a new head at another class count)

# torch BatchNorm tensor suffix -> (flax collection, leaf); torch LayerNorm suffix -> leaf
BN_LEAVES = {
    "weight": ("params", "scale"), "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var"),
}
LN_LEAVES = {"weight": "scale", "bias": "bias"}


def oihw_to_hwio(w: Any) -> Any:
    """A torch conv kernel (out, in, h, w) -> flax's (h, w, in, out)."""
    return w.transpose(2, 3, 1, 0)


def prepare_timm(tensors: Mapping[str, Any], path: str) -> Tuple[Dict[str, Any], List[str]]:
    """A timm / torchvision state dict: everything but BatchNorm's counters."""
    # num_batches_tracked only drives torch's momentum=None averaging; flax has no use for it.
    rest = {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    return rest, [f"{k} (BatchNorm counter, unused)" for k in tensors if k not in rest]
