"""Model registry: config.model.name -> a linen classifier.

Every model maps (B, H, W, 3) images to (B, num_classes) logits, takes
`train: bool` and `labels` ((B,) classes that a training-time head may use in
training: ACoL erases by them), and exposes named layers whose outputs are (B, h, w, C) so the
alignment loss and CAMs can capture them by name (see fer_jax.alignment).
"""
from typing import Any, Callable, Dict

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import resnet, vit, wsol

# name -> linen module constructor (keyword arguments: see create_model)
MODELS: Dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet.ResNet18,
    "resnet34": resnet.ResNet34,
    "resnet50": resnet.ResNet50,
    **vit.VIT_MODELS,  # vit_{tiny,small,base}_patch16, vit_base_patch32, deit_{tiny,small,base}_patch16
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def wsol_options(model_config: Any) -> wsol.Options:
    """The training-time methods' settings of config.model (docs/method.md, "Training-time methods")."""
    return wsol.Options(
        modalities=model_config.wildcat_modalities, kmax=model_config.wildcat_kmax,
        kmin=model_config.wildcat_kmin, alpha=model_config.wildcat_alpha,
        acol_threshold=model_config.acol_threshold, adl_drop_rate=model_config.adl_drop_rate,
        adl_threshold=model_config.adl_threshold)


def create_model(model_config: Any, num_classes: int, bn_axis_name: str | None = None) -> nn.Module:
    """Builds the model named by `model_config.name` (see configs and MODELS)."""
    name = model_config.name
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is unknown; valid names: {sorted(MODELS)}")
    if name.startswith("resnet"):
        return MODELS[name](
            num_classes=num_classes, width=model_config.width,
            large_maps=model_config.large_maps, dtype=_DTYPES[model_config.dtype],
            bn_axis_name=bn_axis_name, head=model_config.head, adl=model_config.adl,
            wsol_options=wsol_options(model_config))
    if name in vit.VIT_MODELS:
        return MODELS[name](
            num_classes=num_classes, dtype=_DTYPES[model_config.dtype],
            head=model_config.vit_head, image_size=model_config.vit_pos_size,
            dropout=model_config.dropout, drop_path=model_config.drop_path)
    return MODELS[name](num_classes=num_classes, dtype=_DTYPES[model_config.dtype])
