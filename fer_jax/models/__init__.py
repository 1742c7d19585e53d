"""Model registry: config.model.name -> a linen classifier (fer_jax.models.registry).

Every model maps (B, H, W, 3) images to (B, num_classes) logits, takes
`train: bool` and `labels` ((B,) classes that a training-time head may use in
training: ACoL erases by them), and exposes named layers whose outputs are (B, h, w, C) so the
alignment loss and CAMs can capture them by name (see fer_jax.alignment). What the CAM
engine, capture and training read from it is the contract of
fer_jax.models.contract.ExplainableModel.

A family module registers its variants on import; a new backbone is one module
and its line below (README, "Extending fer_jax").
"""
from typing import Any, Callable, Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax.models import contract, registry
from fer_jax.models import mini_xception, resnet, vit  # noqa: F401  (each registers its family)
from fer_jax.models import apvit  # noqa: F401,I001  (after vit: it reuses its blocks)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class _Constructors(Mapping[str, Callable[..., nn.Module]]):
    """name -> constructor of every registered backbone (a live view of the registry)."""

    def __getitem__(self, name: str) -> Callable[..., nn.Module]:
        return registry.BACKBONES[name].constructor

    def __iter__(self) -> Iterator[str]:
        return iter(registry.BACKBONES)

    def __len__(self) -> int:
        return len(registry.BACKBONES)


MODELS: Mapping[str, Callable[..., nn.Module]] = _Constructors()

__all__ = ["MODELS", "apvit", "contract", "create_model", "initial_variables", "mini_xception",
           "registry", "resnet", "vit"]

# XLA's CPU backend at its default level 3 spends 20 s of a tiny run's 47 on compiling the
# initialiser (every parameter's random draw, unrolled), a program that runs once. Level 2
# compiles it in a fifth of the time to bitwise the same variables (measured on ResNet-18;
# tests/test_initial_variables.py pins the equality; level 0 would change the last bit of
# truncated-normal draws). Other backends keep their defaults.
_INIT_COMPILER_OPTIONS: dict[str, dict[str, str | bool]] = {
    "cpu": {"xla_backend_optimization_level": "2"}}


def create_model(model_config: Any, num_classes: int, bn_axis_name: str | None = None
                 ) -> contract.ExplainableModel:
    """Builds the model named by `model_config.name` through its family (see registry): a
    linen module that implements the model contract."""
    backbone = registry.get(model_config.name)
    return backbone.family.build(backbone.constructor, model_config, num_classes, bn_axis_name,
                                 _DTYPES[model_config.dtype])


def initial_variables(model: "nn.Module | contract.ExplainableModel", rng: jax.Array,
                      image_size: int, **init_kwargs: Any) -> Any:
    """`model.init(rng, zeros (1, image_size, image_size, 3), **init_kwargs)`, jitted (one
    compilation instead of one per initialiser) and compiled for a single run: the
    variables, bitwise those of `jax.jit(model.init)` at XLA's default settings."""
    images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    init = jax.jit(lambda key, x: model.init(key, x, **init_kwargs))
    options = _INIT_COMPILER_OPTIONS.get(jax.default_backend(), {})
    return init.lower(rng, images).compile(compiler_options=options)(rng, images)
