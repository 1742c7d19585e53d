"""What a training-time method is, and the registry: the one list of valid method names.

A training-time CAM method (docs/method.md, "Training-time methods") builds its
localisation map into the model or into training. Each module of this package
declares one `Method` and registers it, as the CAM methods do (fer_jax.cams.base).
Whatever names a method reads REGISTRY: the config's head choices, option fields
and family checks (fer_jax.config_schema), the models' heads and inserted layers
(fer_jax.models), a model's built-in CAM (fer_jax.cams.builtin), the recipes'
`with_method` and the paper grids (fer_jax.grids).

A method changes the model or its training in one of three ways:
- `head(num_classes, options, hidden, dtype, name)`: a linen module that replaces
  the linear GAP head, a `TrainingHead`. It maps the cam layer (B, h, w, C) to
  logits (B, K) float32 as `head(x, train, labels)` (`labels`: the classes in
  training, for heads that use them), may sow extra logits into AUX_LOGITS (each
  gets a cross-entropy), and gives its built-in map of any class by
  `class_maps(x, classes) -> (B, h, w)`.
- `insert`: layers inserted after backbone blocks (an `Insert`), training-time only
  or not, as the layer decides.
- `transform(config) -> f`: a train-time transform of the input batch (CutMix), which
  the train step applies (fer_jax.train) as `f(batch, seed, step, device) -> (batch,
  partner_labels, lam)`: each example's cross-entropy becomes lam * CE(label) + (1 - lam)
  * CE(partner's label) (lam None: plain CE). Its randomness must come from (seed, step,
  device) only, so a resumed run draws what the uninterrupted one would.
"""
import dataclasses
from typing import (Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Protocol, Tuple,
                    runtime_checkable)

import jax.numpy as jnp

from fer_jax.errors import ConfigError
from fer_jax.fields import Field

AUX_LOGITS = "aux_logits"   # collection of extra (B, K) logits that also get a cross-entropy


@runtime_checkable
class TrainingHead(Protocol):
    """A training-time method's head, the part of the model contract a head implements
    (fer_jax.models.contract.ExplainableModel.head_module returns one)."""

    def __call__(self, x: jnp.ndarray, train: bool = False,
                 labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        """cam layer (B, h, w, C) -> logits (B, K) float32; labels (B,): the classes in training."""

    def class_maps(self, x: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        """cam layer (B, h, w, C), classes (B,) int -> the built-in map of each class (B, h, w)."""

    def apply(self, variables: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """linen's apply, e.g. of `class_maps` with the head's parameters (the CAM engine)."""


@dataclasses.dataclass(frozen=True)
class Option:
    """A config field of a method, at `key` ("group.leaf", e.g. "model.wildcat_kmax").

    `name`: the attribute of `Options` through which model code reads it ("" = the
    leaf). Only options of the "model" group reach the model; the others are read
    where their group is (train.* by the train step).
    """
    key: str
    field: Field
    name: str = ""

    @property
    def attribute(self) -> str:
        return self.name or self.key.split(".")[-1]


@dataclasses.dataclass(frozen=True)
class Insert:
    """Layers inserted after backbone blocks.

    after: stage number (1 = the first) -> indices of the blocks each followed by a
    layer (-1 = the last block); layer(options, name) -> a linen module called as
    layer(x, train), (B, h, w, C) -> same shape. The layer is named
    f"{method name}{block index}" inside its stage.
    """
    layer: Callable[..., Any]
    after: Mapping[int, Tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class Method:
    """One training-time method.

    name: registry key (recipes.with_method, grid rows); summary: one line for docs;
    switch: (config key, value) that turns it on (`switch_on`); the method is on when
      that key holds that value, or when `on(config)` says so if given;
    families: backbone families (fer_jax.models.registry) it applies to; empty = any;
    options: its config fields (`Option`s) with defaults, one-line docs and checks;
    head / insert / transform: how it changes the model or training (module docstring);
    cam_method: the registry name of its built-in map (fer_jax.cams.REGISTRY): its head's
      own map, or "cam" when it keeps the linear GAP head;
    paper_configs: dataset -> config file of its row of the paper's Table 1.
    """
    name: str
    summary: str
    switch: Tuple[str, Any]
    families: FrozenSet[str] = frozenset()
    options: Tuple[Option, ...] = ()
    head: Optional[Callable[..., Any]] = None
    insert: Optional[Insert] = None
    transform: Optional[Callable[[Any], "BatchTransform"]] = None
    cam_method: str = "cam"
    paper_configs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    on: Optional[Callable[[Any], bool]] = None

    def is_on(self, config: Any) -> bool:
        """Whether `config` (a whole config) switches this method on."""
        if self.on is not None:
            return bool(self.on(config))
        group, leaf = self.switch[0].split(".")
        return config[group][leaf] == self.switch[1]


BatchTransform = Callable[..., Tuple[Any, Any, Any]]   # see `transform` above

REGISTRY: Dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in REGISTRY:
        raise ValueError(f"training-time method {method.name!r} is registered twice")
    if sum(x is not None for x in (method.head, method.insert, method.transform)) != 1:
        raise ValueError(f"training-time method {method.name!r}: give exactly one of head, "
                         "insert and transform")
    REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    """The method `name`; a ConfigError names it and the registered methods."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown training-time method {name!r}; valid methods: "
                          f"{sorted(REGISTRY)}")
    return REGISTRY[name]


def paper_configs(method: str, *datasets: str) -> Dict[str, str]:
    """dataset -> its paper-row config file, `configs/paper/<dataset>_<method>.py`."""
    return {d: f"configs/paper/{d}_{method}.py" for d in datasets}


def paper_methods(dataset: Optional[str] = None) -> Tuple[str, ...]:
    """Methods with a row in the paper's Table 1 (on `dataset` if given), registry order."""
    return tuple(n for n, m in REGISTRY.items()
                 if m.paper_configs and (dataset is None or dataset in m.paper_configs))


def heads(key: str) -> List[str]:
    """Names of the head methods selected by config key `key` ("model.head", "model.vit_head")."""
    return [n for n, m in REGISTRY.items() if m.head is not None and m.switch[0] == key]


def batch_transform(config: Any) -> Optional[BatchTransform]:
    """The batch transform of the training-time method `config` switches on, bound to its
    options; None when no such method is on. Two at once is a ConfigError naming them."""
    on = [m for m in REGISTRY.values() if m.transform is not None and m.is_on(config)]
    if len(on) > 1:
        raise ConfigError(f"training-time methods {[m.name for m in on]} each transform the "
                          "batch; switch on at most one")
    return on[0].transform(config) if on and on[0].transform is not None else None


def options() -> List[Option]:
    """Every registered method's options, in registry order."""
    return [o for m in REGISTRY.values() for o in m.options]


def inserts_on(model_config: Any) -> Tuple[str, ...]:
    """Names of the insert methods that `model_config` (config.model) switches on: layer
    methods are switched by a key of config.model, as they change the model alone."""
    return tuple(n for n, m in REGISTRY.items()
                 if m.insert is not None and m.is_on({"model": model_config}))


def switch_on(config: Any, name: str) -> Any:
    """`config` with method `name` switched on (its `switch` value set); returned for chaining."""
    group, leaf = get(name).switch[0].split(".")
    config[group][leaf] = get(name).switch[1]
    return config


class Options:
    """Settings of the training-time methods, read by attribute (e.g. `options.kmax`).

    Options(**values) overrides some; any other attribute is its option's default,
    looked up in REGISTRY when read, so a method registered later has its defaults
    too. Hashable and compared by the overrides: linen modules hold it as a field.
    """

    def __init__(self, **values: Any):
        known = {o.attribute for o in options()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"Options: unknown option {unknown[0]!r}; valid: {sorted(known)}")
        object.__setattr__(self, "_values", tuple(sorted(values.items())))

    @classmethod
    def from_config(cls, model_config: Any) -> "Options":
        """The values of config.model's method options."""
        return cls(**{o.attribute: model_config[o.key.split(".")[1]] for o in options()
                      if o.key.startswith("model.")})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):   # copy and pickle probe for these before __init__ ran
            raise AttributeError(name)
        values = dict(self._values)
        if name in values:
            return values[name]
        for option in options():
            if option.attribute == name:
                return option.field.default
        raise AttributeError(f"no training-time method has an option {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Options are immutable")

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Options) and self._values == other._values

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"Options({', '.join(f'{k}={v!r}' for k, v in self._values)})"


def make_head(kind: str, num_classes: int,
              options: Options = Options(),   # noqa: B008 (immutable, defaults read lazily)
              hidden: int = 1024, dtype: Any = jnp.float32, name: Optional[str] = None
              ) -> TrainingHead:
    """The head of method `kind`. Inside a model's compact method it becomes that model's
    submodule `name`; outside, a top-level module to apply with head params.
    `hidden`: channels of the head's hidden layers, for heads that have any."""
    method = REGISTRY.get(kind)
    if method is None or method.head is None:
        with_map = [n for n, m in REGISTRY.items() if m.head is not None]
        raise ValueError(f"head {kind!r} has no built-in map; heads with one: {with_map}")
    return method.head(num_classes, options, hidden, dtype, name)


def pick(class_maps: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
    """(B, h, w, K) maps, (B,) classes -> (B, h, w) the map of each sample's class."""
    return jnp.take_along_axis(class_maps, classes.astype(jnp.int32)[:, None, None, None],
                               axis=-1)[..., 0]

