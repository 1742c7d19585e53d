"""CAMs of any Flax linen module, its layers named by module path (pytorch-grad-cam for JAX).

  from fer_jax.cams import explain_module
  maps = explain_module(module, variables, images, classes, target_layers=["ResNetBlock_7"],
                        methods=["gradcam", "layercam", "eigencam"])  # {name: (B, H, W)}

fer_jax's own models implement the model contract that the engine (fer_jax.cams.engine)
reads (fer_jax.models.contract.ExplainableModel: `cam_layer`, `head_name`, `gap_head`,
`head_module()`, `attention_layers`, `patch_size`, ...), through the same `ModelView`
that presents any other module: its apply function alone, plus an optional target and
reshape_transform. The methods that need no more than a
layer's output, its gradient and further forward passes then apply (gradient methods,
Score-CAM, Eigen-CAM, the reference rows), computed from one forward and one backward
pass as for fer_jax's models. The others (CAM: the head's weights; the built-in maps
of training-time heads; rollout and class-token attention: attention taps) raise an
error naming what they need.

A target layer is a module path: the names of `Module.path` joined by "/", as
`capture_intermediates` nests its outputs ("ResNetBlock_7", "encoder/blocks_3/mlp"),
or the tuple of those names. `module_layers` lists them. The layer's `__call__` output
is read, and its gradient taken through a method interceptor that adds zero to that
output (fer_jax.capture.probe), so the module need not be written for it.
"""
import functools
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax.cams import base, engine
from fer_jax.models.contract import ModelView, Target

LayerPath = Union[str, Sequence[str]]

# What the needs that only fer_jax's model contract meets are, for error messages.
_CONTRACT = {
    base.HEAD: "the kernel of a linear classifier on the global average of a layer "
               "(a fer_jax model's `head_name`, `gap_head` and `cam_layer`)",
    base.HEAD_MAPS: "the class maps of a training-time head (a fer_jax model's "
                    "`head_module()`)",
    base.ATTENTION: "the attention probabilities of every transformer block (a fer_jax "
                    "ViT's `attention_layers`)",
}


def layer_name(path: LayerPath) -> str:
    """"a/b" for "a/b" or ("a", "b")."""
    return path if isinstance(path, str) else "/".join(path)


def _layer_calls(apply_fn: Callable[..., Any], variables: Mapping[str, Any],
                 images: jnp.ndarray) -> Dict[str, List[Any]]:
    """{path: the outputs of each `__call__` of that submodule}, abstract (no FLOPs)."""
    _, state = jax.eval_shape(
        lambda v, x: apply_fn(v, x, capture_intermediates=True, mutable=["intermediates"]),
        variables, images)
    found: Dict[str, List[Any]] = {}

    def walk(node: Mapping[str, Any], prefix: Tuple[str, ...]) -> None:
        for key, child in node.items():
            if key != "__call__":
                walk(child, prefix + (key,))
            elif prefix:   # prefix (): the root module's own output
                found["/".join(prefix)] = list(child)

    walk(state.get("intermediates", {}), ())
    return found


def module_layers(apply_fn: Callable[..., Any], variables: Mapping[str, Any],
                  images: jnp.ndarray) -> Dict[str, Tuple[int, ...]]:
    """{path: output shape} of every submodule whose `__call__` returns an array.

    apply_fn as in ModelView; images (B, H, W, C). Traced abstractly (no FLOPs).
    """
    return {name: tuple(outs[0].shape)
            for name, outs in _layer_calls(apply_fn, variables, images).items()
            if hasattr(outs[0], "shape")}


def _missing(method: base.CamMethod, view: ModelView) -> Optional[str]:
    """What `method` needs that the view of a module given by layer paths (its apply
    function alone) lacks, or None if it applies."""
    lacking = [_CONTRACT[n] for n in sorted(method.needs) if n in _CONTRACT]
    if method.source == base.CAM_LAYER and not lacking:
        lacking.append("the layer a classifier head pools (a fer_jax model's `cam_layer`)")
    if lacking:
        return " and ".join(lacking)
    return method.requires(view)


def module_methods() -> List[str]:
    """Names of the registered methods that apply to any module, in registry order."""
    view = ModelView(apply_fn=lambda *a, **k: None)
    return [name for name, m in base.REGISTRY.items() if _missing(m, view) is None]


def _check_methods(methods: Sequence[str], view: ModelView) -> None:
    for name in methods:
        if name in base.SETS:
            continue
        if name not in base.REGISTRY:
            raise ValueError(f"unknown CAM method {name!r}; methods for any module: "
                             f"{module_methods()} (or a set: {list(base.SETS)})")
        lacking = _missing(base.REGISTRY[name], view)
        if lacking:
            raise ValueError(
                f"CAM method {name!r} does not apply to a module given by layer paths: it "
                f"needs {lacking}. Methods for any module: {module_methods()}; fer_jax's "
                f"models provide the rest (fer_jax.cams.explain).")


def _check_layers(layers: Sequence[str], view: ModelView, variables: Mapping[str, Any],
                  images: jnp.ndarray) -> None:
    if not layers:
        raise ValueError("target_layers: name at least one layer (module_layers lists them)")
    calls = _layer_calls(view.apply_fn, variables, images)
    available = {n: tuple(o[0].shape) for n, o in calls.items() if hasattr(o[0], "shape")}
    for name in layers:
        if name in calls and len(calls[name]) > 1:
            # The interceptor would perturb every call, the capture keep the first one.
            raise ValueError(f"target layer {name!r} is called {len(calls[name])} times in "
                             f"one forward pass; name a module that is called once")
        if name not in available:
            shown = [n for n in available if "/" not in n] or list(available)
            raise ValueError(f"target layer {name!r} is not a submodule's output; top-level "
                             f"layers: {shown} ({len(available)} layers in all, "
                             f"fer_jax.cams.module_layers lists them)")
        shape = jax.ShapeDtypeStruct(available[name], jnp.float32)
        if view.reshape_transform is not None:
            shape = jax.eval_shape(view.reshape_transform, shape)
        if len(shape.shape) != 4:
            raise ValueError(
                f"target layer {name!r}: its output {available[name]} is "
                + (f"reshaped to {tuple(shape.shape)}, " if view.reshape_transform else "")
                + "not a (B, h, w, C) grid; give a reshape_transform that lays it out as one "
                  "(e.g. (B, N, D) tokens -> (B, h, w, D))")


def explain_module(module_or_apply: Union[nn.Module, Callable[..., Any]],
                   variables: Mapping[str, Any], images: jnp.ndarray, classes: jnp.ndarray,
                   target_layers: Sequence[LayerPath], methods: Sequence[str],
                   reshape_transform: Optional[Callable[[jnp.ndarray], jnp.ndarray]] = None,
                   target: Optional[Target] = None,
                   apply_kwargs: Optional[Mapping[str, Any]] = None,
                   aug_smooth: bool = False, eigen_smooth: bool = False,
                   score_batch: int = 256, sample_ids: Optional[jnp.ndarray] = None
                   ) -> Dict[str, jnp.ndarray]:
    """Every map of `methods` for a batch of any linen module, from one forward and backward.

    module_or_apply: a linen module, or its apply function (variables, images, **kw) ->
    outputs; apply_kwargs: bound to it, e.g. {"train": False} (the module must run in
    eval mode: samples independent, no state updated). images (B, H, W, C) as the
    module takes them; classes (B,) int: the class each map explains.
    target_layers: a sequence of module paths, each "a/b" or ("a", "b"), or one path
    as a string (module_layers lists them); each layer's output is (B, h, w, C), or
    made so by reshape_transform ((B, N, D) tokens -> (B, h, w, D), applied to the
    output and its gradient, as pytorch-grad-cam); with several layers each map is
    min-max scaled, and the maps are averaged and scaled again.
    methods: names from module_methods() and the sets "paper", "all"; a method that
    needs fer_jax's model contract raises ValueError saying what it needs.
    target(outputs, classes) -> (B,) scores to explain (default: outputs[b, classes[b]]).
    aug_smooth, eigen_smooth, score_batch: as fer_jax.cams.CamSpec; sample_ids (B,):
    seeds of the random map (default 0..B-1). Jittable.
    Returns {method: (B, H, W) float32 in [0, 1]} at the input resolution.
    """
    apply_fn = module_or_apply.apply if isinstance(module_or_apply, nn.Module) else module_or_apply
    if apply_kwargs:
        apply_fn = functools.partial(apply_fn, **apply_kwargs)
    view = ModelView(apply_fn, cam_target=target, reshape_transform=reshape_transform)
    if isinstance(target_layers, str):   # one layer named alone, not its characters
        target_layers = [target_layers]
    layers = tuple(dict.fromkeys(layer_name(p) for p in target_layers))
    _check_methods(methods, view)
    _check_layers(layers, view, variables, images)
    spec = engine.spec_for(view, methods=methods, layers=layers, aug_smooth=aug_smooth,
                           eigen_smooth=eigen_smooth, score_batch=score_batch,
                           merge_identical=False)
    return engine.explain(view, variables, images, classes, spec, sample_ids=sample_ids).maps
