"""What a CAM method is: its needs, the models it applies to, its function; and the registry.

Each method module (head, gradient, score, eigen, attention, reference)
declares `CamMethod`s and registers them. The engine (fer_jax.cams.engine)
reads the `needs` of the selected methods, runs one forward (and at most one
backward) pass that provides all of them, and calls each method's function.

A method's function gets a `LayerInputs` and returns either
- "weighted": per-channel contributions (B, h, w, C) whose channel sum is the
  map (so that `eigen_smooth` can replace the sum by the first principal
  component, as pytorch-grad-cam does), or
- "map": the map itself, (B, h, w) at the layer's or the input's resolution.
"""
import dataclasses
from typing import Callable, Dict, FrozenSet, List, NamedTuple, Optional, Sequence

import jax.numpy as jnp

from fer_jax.errors import ConfigError
from fer_jax.models.contract import Explainable, ModelView, describe

# What a method may need from the engine.
FEATURES = "features"        # the layer's (B, h, w, C) output
GRADIENTS = "gradients"      # d score / d features at the layer
HEAD = "head"                # the classifier's kernel (C, K) over the GAP of the cam layer
ATTENTION = "attention"      # attention probabilities of every ViT block
FORWARDS = "forwards"        # extra forward passes of perturbed images
HEAD_MAPS = "head_maps"      # the class maps a training-time head builds from the cam layer

# Where a method's map comes from.
PER_LAYER = "per_layer"      # each of the selected cam layers (maps averaged)
CAM_LAYER = "cam_layer"      # the layer whose global average feeds the head
ALL_BLOCKS = "all_blocks"    # every attention block of a ViT
INPUT = "input"              # no layer: a map at input resolution


class LayerInputs(NamedTuple):
    """Everything a method function may read; fields it did not declare are None.

    features (B, h, w, C) float32; gradients same shape; head_kernel (C, K);
    classes (B,) int; attention: per block (B, heads, N, N) probabilities with
    token 0 the class token; images (B, H, W, 3) normalised; class_scores:
    images (n, H, W, 3), classes (n,) -> (n,) target logits (one forward, jitted
    with the rest); grid: (h, w) patch grid of a ViT; sample_ids (B,) int;
    head_maps: features (B, h, w, C), classes (B,) -> (B, h, w) built-in class maps
    of the model's training-time head (fer_jax.methods), with its parameters.
    """
    features: Optional[jnp.ndarray] = None
    gradients: Optional[jnp.ndarray] = None
    head_kernel: Optional[jnp.ndarray] = None
    classes: Optional[jnp.ndarray] = None
    attention: Optional[Sequence[jnp.ndarray]] = None
    images: Optional[jnp.ndarray] = None
    class_scores: Optional[Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]] = None
    grid: Optional[tuple] = None
    sample_ids: Optional[jnp.ndarray] = None
    score_batch: int = 256
    head_maps: Optional[Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]] = None


@dataclasses.dataclass(frozen=True)
class CamMethod:
    """One explanation method.

    name: registry key (config.eval.cam_methods); summary: one line for docs;
    needs: subset of {FEATURES, GRADIENTS, HEAD, ATTENTION, FORWARDS, HEAD_MAPS};
    source: PER_LAYER, CAM_LAYER, ALL_BLOCKS or INPUT; output: "weighted" or "map";
    relu: ReLU before normalisation (pytorch-grad-cam applies it to every method);
    class_specific: False for maps that ignore the target class;
    requires: the model's view (fer_jax.models.contract.ModelView) -> None if the method
      applies, else the reason it does not;
    reference: a chance-level row (random, centre), not an explanation;
    in_paper: the paper's Table 1 reports this map (the default set, PAPER_SET).
    """
    name: str
    summary: str
    fn: Callable[[LayerInputs], jnp.ndarray]
    needs: FrozenSet[str]
    source: str = PER_LAYER
    output: str = "weighted"
    relu: bool = True
    class_specific: bool = True
    requires: Callable[[ModelView], Optional[str]] = lambda model: None
    reference: bool = False
    in_paper: bool = False


REGISTRY: Dict[str, CamMethod] = {}

# Names of method sets that config.eval.cam_methods may use instead of (or beside) methods.
PAPER_SET = "paper"   # the paper's maps that apply to the model, plus the reference rows
ALL_SET = "all"       # every method that applies to the model
SETS = (PAPER_SET, ALL_SET)


def register(method: CamMethod) -> CamMethod:
    if method.name in REGISTRY:
        raise ValueError(f"CAM method {method.name!r} is registered twice")
    REGISTRY[method.name] = method
    return method


def needs_gap_head(model: ModelView) -> Optional[str]:
    if model.gap_head:
        return None
    return ("needs a global-average-pooling head over the cam layer "
            "(ResNet, or a ViT with model.vit_head='gap')")


def needs_attention(model: ModelView) -> Optional[str]:
    if model.attention_layers:
        return None
    return "needs a vision transformer's attention probabilities (ViT/DeiT models)"


def applicable(model: Explainable) -> List[str]:
    """Names of the registered methods that apply to `model`, in registry order."""
    view = describe(model)
    return [name for name, m in REGISTRY.items() if m.requires(view) is None]


def paper_methods(model: Explainable) -> List[str]:
    """The paper's maps that apply to `model` and the reference rows, in registry order:
    what training-time evaluation scores by default (cheap, and the paper's figures)."""
    return [n for n in applicable(model) if REGISTRY[n].in_paper or REGISTRY[n].reference]


def select(names: Sequence[str], model: Explainable, key: str = "eval.cam_methods"
           ) -> List[str]:
    """The methods to run, in the order given, sets expanded in registry order.

    names: registry names and the sets "paper" (paper_methods) and "all" (every
    method that applies); () is ("paper",). Raises ConfigError naming an unknown
    method (with the valid names) or one that does not apply to this model (with
    the reason).
    """
    view = describe(model)
    chosen: List[str] = []
    for name in list(names) or [PAPER_SET]:
        if name == PAPER_SET:
            chosen += paper_methods(view)
            continue
        if name == ALL_SET:
            chosen += applicable(view)
            continue
        if name not in REGISTRY:
            raise ConfigError(f"config.{key}: unknown CAM method {name!r}; valid names: "
                              f"{sorted(REGISTRY)} (or a set: {list(SETS)})")
        reason = REGISTRY[name].requires(view)
        if reason:
            raise ConfigError(f"config.{key}: CAM method {name!r} does not apply to "
                              f"{view.title}: it {reason}")
        chosen.append(name)
    return list(dict.fromkeys(chosen))
