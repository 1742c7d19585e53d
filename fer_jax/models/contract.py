"""The model contract: what the CAM engine, capture and training read from a model.

`ExplainableModel` declares it, with types: every backbone of fer_jax.models.registry
implements it (ResNet and ViT share their head half through `MethodHeads`, the CNNs
their layer half through `ConvNetLayers`), and
tests/test_model_contract.py pins that for every backbone and training-time method.

The readers do not read the model itself: `describe(model)` turns it into a
`ModelView`, the one place where a member a module lacks gets its default (a
plain linen module, a plug-in backbone that declares only part of the contract).
fer_jax.cams.explain_module builds a `ModelView` of any module from its apply
function, so the engine reads one type whatever the model.

A layer module may declare `capture_kind = ATTENTION` (a ViT's attention tap);
`layer_kind` reads it for fer_jax.capture.
"""
import dataclasses
import functools
import inspect
from typing import (Any, Callable, Mapping, Optional, Protocol, Tuple, Union,
                    runtime_checkable)

import flax.linen as nn
import jax.numpy as jnp

from fer_jax import methods
from fer_jax.methods.base import TrainingHead

__all__ = ["ATTENTION", "ConvNetLayers", "Explainable", "ExplainableModel", "FEATURES",
           "MethodHeads",
           "ModelView", "Target", "TrainingHead", "describe", "layer_kind"]

# The kinds of capturable layers (fer_jax.capture), declared by a layer's `capture_kind`.
FEATURES = "features"     # (B, h, w, C) outputs: the default
ATTENTION = "attention"   # attention probabilities (B, heads, N, N)

# (outputs of the model, classes (B,) int) -> (B,) scores; samples must be independent.
Target = Callable[[Any, jnp.ndarray], jnp.ndarray]


@runtime_checkable
class ExplainableModel(Protocol):
    """A linen classifier that fer_jax trains, aligns and explains.

    It maps (B, H, W, 3) images to (B, num_classes) logits as
    `apply(variables, images, train=..., labels=...)`; the members below tell the
    CAM engine where its head reads. Layer names are capture names (module paths
    below the root, fer_jax.capture).
    """

    @property
    def num_classes(self) -> int:
        """K, the number of logits."""

    @property
    def cam_layer(self) -> str:
        """The (B, h, w, C) layer the head reads (CAM, the heads' built-in maps, run.json)."""

    @property
    def default_cam_layers(self) -> Tuple[str, ...]:
        """The layers of the per-layer CAM methods when a config names none."""

    @property
    def cam_layer_nonnegative(self) -> bool:
        """cam_layer is >= 0 (ends in a ReLU): XGrad-CAM then equals Grad-CAM on a GAP head."""

    @property
    def head(self) -> str:
        """The head's kind: "gap", another head of the family, or a training-time method's."""

    @property
    def head_name(self) -> str:
        """The key of the head's parameters in variables["params"]."""

    @property
    def gap_head(self) -> bool:
        """logits = mean_hw(cam_layer) @ params[head_name]["kernel"] + bias (CAM applies)."""

    def head_module(self, name: Optional[str] = None) -> TrainingHead:
        """The training-time method's head (head is a method's), unbound unless in a model."""

    @property
    def attention_layers(self) -> Tuple[str, ...]:
        """Capture names of every block's attention probabilities, first first; () = none."""

    @property
    def patch_size(self) -> Optional[int]:
        """Side of a token model's patches (cam layers are the H/p x W/p grid); None = CNN."""

    def init(self, rngs: Any, *args: Any, **kwargs: Any) -> Any:
        """linen's init: the variables."""

    def apply(self, variables: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """linen's apply: the logits (and mutated collections when asked)."""


@dataclasses.dataclass(frozen=True)
class ModelView:
    """What the CAM engine reads, as values: the contract of ExplainableModel, defaults
    where a module lacks a member, and the two settings of fer_jax.cams.explain_module.

    apply_fn(variables, images, **kwargs) -> outputs, in eval mode (the module's own
    flags, e.g. `train=False`, bound beforehand); title: the model's class, for
    messages; head_module() -> the training-time head (None: not a method's head);
    cam_target: the score to explain (None: the class logit, fer_jax.capture.class_logit);
    reshape_transform: a target layer's output -> (B, h, w, C) (None: it already is).
    The other fields are ExplainableModel's, None / False / () where a module has none.
    """
    apply_fn: Callable[..., Any]
    title: str = "module"
    cam_layer: Optional[str] = None
    default_cam_layers: Tuple[str, ...] = ()
    cam_layer_nonnegative: bool = False
    head: Optional[str] = None
    head_name: Optional[str] = None
    gap_head: bool = False
    head_module: Optional[Callable[[], TrainingHead]] = None
    attention_layers: Tuple[str, ...] = ()
    patch_size: Optional[int] = None
    cam_target: Optional[Target] = None
    reshape_transform: Optional[Callable[[jnp.ndarray], jnp.ndarray]] = None

    def apply(self, variables: Mapping[str, Any], images: jnp.ndarray, train: bool = False,
              **kwargs: Any) -> Any:
        """apply_fn in eval mode (the only mode the engine asks for)."""
        if train:
            raise ValueError("a ModelView applies its model in eval mode only")
        return self.apply_fn(variables, images, **kwargs)


# What the engine accepts: one of fer_jax's models, or a view built beforehand.
Explainable = Union[ExplainableModel, ModelView]


def describe(model: Union[ExplainableModel, ModelView, nn.Module]) -> ModelView:
    """The view of `model` that the CAM engine reads (a ModelView is returned as is).

    The one place that reads the contract off a model: a member the module lacks
    takes the ModelView default (a plain linen module: an apply function alone);
    default_cam_layers defaults to (cam_layer,) when the module has a cam layer.
    A module whose __call__ takes `train` runs with train=False (eval mode).
    """
    if isinstance(model, ModelView):
        return model
    cam_layer = getattr(model, "cam_layer", None)
    default_layers = getattr(model, "default_cam_layers", None)
    if default_layers is None:
        default_layers = (cam_layer,) if cam_layer else ()
    return ModelView(
        apply_fn=(functools.partial(model.apply, train=False) if _takes_train(model)
                  else model.apply),
        title=type(model).__name__,
        cam_layer=cam_layer,
        default_cam_layers=tuple(default_layers),
        cam_layer_nonnegative=bool(getattr(model, "cam_layer_nonnegative", False)),
        head=getattr(model, "head", None),
        head_name=getattr(model, "head_name", None),
        gap_head=bool(getattr(model, "gap_head", False)),
        head_module=getattr(model, "head_module", None),
        attention_layers=tuple(getattr(model, "attention_layers", ())),
        patch_size=getattr(model, "patch_size", None))


def _takes_train(model: Any) -> bool:
    try:
        return "train" in inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):   # no __call__, or one without a signature
        return False


def layer_kind(layer: nn.Module) -> str:
    """The capture kind a layer module declares (`capture_kind`): FEATURES unless it says."""
    return getattr(layer, "capture_kind", FEATURES)


class MethodHeads:
    """The head half of the contract, as fer_jax's backbones have it (mixed into ResNet, ViT).

    `head` is the model's field: "gap" (linear on the global average of cam_layer),
    another head of the family, or a training-time method's head (fer_jax.methods),
    whose parameters sit under `head_name`. A backbone whose method heads take
    options or a hidden width overrides `head_settings`.
    """
    head: str
    num_classes: int
    dtype: Any

    head_name = "head"

    @property
    def gap_head(self) -> bool:
        """True when logits = mean_hw(cam_layer) @ head.kernel + bias (CAM applies)."""
        return self.head == "gap"

    def head_settings(self) -> Tuple[methods.Options, int]:
        """(options, hidden channels) of the method heads: the registry defaults, 1024."""
        return methods.Options(), 1024

    # Not wrapped by linen (a plain mixin): also called outside the model (CAM engine),
    # where it returns a top-level module.
    def head_module(self, name: Optional[str] = None) -> TrainingHead:
        """The training-time method's head (head is not "gap"): inside the model's compact
        __call__ its submodule `name`, elsewhere a top-level module."""
        options, hidden = self.head_settings()
        return methods.make_head(self.head, self.num_classes, options, hidden=hidden,
                                 dtype=self.dtype, name=name)


class ConvNetLayers:
    """The layer half of the contract, as fer_jax's CNNs have it (mixed into ResNet,
    mini-Xception): no attention, no patch grid, and the per-layer CAM methods read the
    head's input unless a config names other layers."""
    cam_layer: str

    attention_layers = ()   # no attention
    patch_size = None       # no patch grid

    @property
    def default_cam_layers(self) -> Tuple[str, ...]:
        """(cam_layer,)."""
        return (self.cam_layer,)
