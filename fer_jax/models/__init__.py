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

__all__ = ["MODELS", "apvit", "contract", "create_model", "mini_xception", "registry", "resnet",
           "vit"]


def create_model(model_config: Any, num_classes: int, bn_axis_name: str | None = None
                 ) -> contract.ExplainableModel:
    """Builds the model named by `model_config.name` through its family (see registry): a
    linen module that implements the model contract."""
    backbone = registry.get(model_config.name)
    return backbone.family.build(backbone.constructor, model_config, num_classes, bn_axis_name,
                                 _DTYPES[model_config.dtype])
