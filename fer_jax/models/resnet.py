"""Flax linen ResNet 18/34/50 with stable, named stages for capture and CAMs.

Layout follows torchvision (so timm/torchvision weights map one to one):
`stem` (conv 7x7/2 + BN + ReLU), max-pool, `stage1`..`stage4`, global average
pooling, `head`. Each stage is its own module, so `capture_intermediates`
records its (B, H, W, C) output under the stage's name.

Training-time CAM methods (fer_jax.methods): `head` replaces the linear GAP
head by a method's head (WILDCAT, ACoL, PRM) on `stage4`; `inserts` adds a
method's layers after the blocks it names (ADL).

The family registers itself and its variants (fer_jax.models.registry) with its
timm weights mapping.
"""
import functools
import re
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from fer_jax import methods
from fer_jax.models import contract, registry, small_input_conv

ModuleDef = Any

# torchvision's BatchNorm: momentum 0.1 (flax: 0.9), eps 1e-5.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5

class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity or 1x1 projection shortcut."""
    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        y = self.conv(self.features, (3, 3), (self.strides, self.strides), padding=1, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, (3, 3), padding=1, name="conv2")(y)
        # Zero-init of the last BN scale makes each block start as identity.
        y = self.norm(name="bn2", scale_init=nn.initializers.zeros)(y)
        return nn.relu(y + _shortcut(self, x, y.shape[-1]))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision v1.5), 1x1 expand x4."""
    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        y = self.conv(self.features, (1, 1), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, (3, 3), (self.strides, self.strides), padding=1, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(self.features * 4, (1, 1), name="conv3")(y)
        y = self.norm(name="bn3", scale_init=nn.initializers.zeros)(y)
        return nn.relu(y + _shortcut(self, x, y.shape[-1]))


def _shortcut(block: nn.Module, x, out_features: int):
    """Identity, or a strided 1x1 conv + BN when the shape changes."""
    if x.shape[-1] == out_features and block.strides == 1:
        return x
    s = (block.strides, block.strides)
    x = block.conv(out_features, (1, 1), s, name="downsample_conv")(x)
    return block.norm(name="downsample_bn")(x)


class Stem(nn.Module):
    """conv 7x7 stride 2 + BN + ReLU: the paper's layer 1 (H/2, W/2, width)."""
    width: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        x = self.conv(self.width, (7, 7), (2, 2), padding=3, name="conv")(x)
        return nn.relu(self.norm(name="bn")(x))


class Stage(nn.Module):
    """A run of residual blocks; the first one carries the stride.

    number: the stage's number (1 = the first); inserts: training-time methods whose
    layers follow the blocks their `Insert.after` names for this stage, as `{method}{i}`.
    """
    block_cls: Callable[..., nn.Module]
    num_blocks: int
    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    number: int = 1
    inserts: Tuple[str, ...] = ()
    options: methods.Options = methods.Options()

    @nn.compact
    def __call__(self, x, train: bool = False):
        inserts = [methods.REGISTRY[m] for m in self.inserts]
        for i in range(self.num_blocks):
            x = self.block_cls(
                features=self.features, strides=self.strides if i == 0 else 1,
                conv=self.conv, norm=self.norm, name=f"block{i}")(x)
            for method in inserts:
                # `inserts` names insert methods only (methods.base.inserts_on, "adl").
                assert method.insert is not None
                if i in {j % self.num_blocks for j in method.insert.after.get(self.number, ())}:
                    x = method.insert.layer(self.options, f"{method.name}{i}")(x, train)
        return x


class ResNet(contract.MethodHeads, contract.ConvNetLayers, nn.Module):
    """ResNet classifier with a global-average-pooling head (CAM-ready).

    Input (B, H, W, 3) float, normalised; output logits (B, num_classes) float32.
    Named intermediate outputs (capture with `capture_intermediates`):
      stem (B, H/2, W/2, width), stage1 (H/4), stage2 (H/8),
      stage3 (H/16, or H/8 with large_maps), stage4 (H/32, or H/8 with large_maps).
    `labels` (B,): the classes ACoL's head erases by in training (others ignore them).
    """
    stage_sizes: Sequence[int]
    block_cls: Callable[..., nn.Module]
    num_classes: int
    width: int = 64               # channels of the stem; stages use 1x, 2x, 4x, 8x
    large_maps: bool = False      # stride 1 in stage3 and stage4 (the paper's CAM setting)
    dtype: Any = jnp.float32      # compute dtype (bfloat16 for mixed precision)
    bn_axis_name: Optional[str] = None  # named batch axis: BN statistics over all devices
    head: str = "gap"             # "gap" (linear on the global average) or a method's head
    inserts: Tuple[str, ...] = ()  # methods whose layers sit between blocks (fer_jax.methods)
    adl: bool = False             # shorthand for inserts=("adl",): config.model.adl's name
    wsol_options: methods.Options = methods.Options()   # settings of the methods' heads, layers

    # The rest of the model contract (fer_jax.models.contract.ExplainableModel; the head's
    # part comes with MethodHeads, the layers' with ConvNetLayers).
    cam_layer = "stage4"   # features the head reads
    cam_layer_nonnegative = True   # it ends in a ReLU (cams.engine.identical_methods)

    @nn.nowrap   # also called outside the model (CAM engine, through head_module)
    def head_settings(self) -> Tuple[methods.Options, int]:
        """The config's method options; ACoL's branches have 16 x width channels (1024 at
        the standard width 64, as ACoL and the reference code)."""
        return self.wsol_options, 16 * self.width

    @nn.compact
    def __call__(self, x, train: bool = False, labels: Optional[jnp.ndarray] = None):
        # Symmetric k//2 padding as in torchvision (SAME would pad 3x3/2 convs asymmetrically).
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, padding=0,
                                 conv_general_dilated=small_input_conv.conv_general_dilated)
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON, dtype=self.dtype, axis_name=self.bn_axis_name if train else None)
        x = Stem(self.width, conv, norm, name="stem")(x.astype(self.dtype))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
        strides = (1, 2, 1, 1) if self.large_maps else (1, 2, 2, 2)
        inserts = tuple(dict.fromkeys(self.inserts + (("adl",) if self.adl else ())))
        for i, (n, s) in enumerate(zip(self.stage_sizes, strides)):
            x = Stage(self.block_cls, n, self.width * 2 ** i, s, conv, norm, i + 1, inserts,
                      self.wsol_options, name=f"stage{i + 1}")(x, train)
        if self.head != "gap":
            return self.head_module(name=self.head_name)(x, train, labels)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=jnp.float32, name=self.head_name)(
            x.astype(jnp.float32))


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)


# -- the family record -------------------------------------------------------------------

def _build(constructor: Callable[..., nn.Module], model_config: Any, num_classes: int,
           bn_axis_name: Optional[str], dtype: Any) -> nn.Module:
    return constructor(
        num_classes=num_classes, width=model_config.width, large_maps=model_config.large_maps,
        dtype=dtype, bn_axis_name=bn_axis_name, head=model_config.head,
        inserts=methods.base.inserts_on(model_config),
        wsol_options=methods.Options.from_config(model_config))


def _timm_resnet(key: str, w: Any, shape_of: registry.ShapeOf) -> registry.Mapped:
    """torchvision-layout ResNet (timm resnet18/34/50) -> fer_jax.models.resnet."""
    if key == "conv1.weight":
        return [(("params", "stem", "conv", "kernel"), registry.oihw_to_hwio(w))]
    if key in ("fc.weight", "fc.bias"):
        return [(("params", registry.HEAD, "kernel" if key.endswith("weight") else "bias"),
                 w.T if w.ndim == 2 else w)]
    m = re.fullmatch(r"(bn1|layer(\d)\.(\d+)\.(bn\d|downsample\.1))\.(\w+)", key)
    if m and m.group(5) in registry.BN_LEAVES:
        module: Tuple[str, ...]
        if m.group(1) == "bn1":
            module = ("stem", "bn")
        else:
            bn = "downsample_bn" if m.group(4) == "downsample.1" else m.group(4)
            module = (f"stage{m.group(2)}", f"block{m.group(3)}", bn)
        collection, leaf = registry.BN_LEAVES[m.group(5)]
        return [((collection,) + module + (leaf,), w)]
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv\d|downsample\.0)\.weight", key)
    if m:
        conv = "downsample_conv" if m.group(3) == "downsample.0" else m.group(3)
        return [(("params", f"stage{m.group(1)}", f"block{m.group(2)}", conv, "kernel"),
                 registry.oihw_to_hwio(w))]
    return None


def _settings_from_params(model_config: Any, params: Mapping[str, Any],
                          constructor: Callable[..., nn.Module]) -> None:
    model_config.width = int(params["stem"]["conv"]["kernel"].shape[-1])


def _timm_model(config: Any, num_classes: int) -> Tuple[Any, Dict[str, Any]]:
    """timm's ResNet with fer_jax's width and large maps; stages by fer_jax name."""
    import timm
    w = config.model.width  # fer_jax: stem `width`, stages 1x, 2x, 4x, 8x of it
    model = timm.create_model(config.model.name, num_classes=num_classes, stem_width=w,
                              channels=tuple(w * 2 ** i for i in range(4)))
    if config.model.large_maps:  # fer_jax: stride 1 in stage3 and stage4, no dilation
        for stage in (model.layer3, model.layer4):
            # The strided 3x3 conv and the shortcut. (type: ignore: torch's stubs type a
            # submodule attribute as Tensor | Module, a false positive.)
            for conv in stage[0].modules():  # type: ignore[index, union-attr]
                if getattr(conv, "stride", None) == (2, 2):
                    conv.stride = (1, 1)
    return model, {f"stage{i}": model.get_submodule(f"layer{i}") for i in range(1, 5)}


FAMILY = registry.register_family(registry.Family(
    name="resnet", title="ResNet", build=_build, head_key="model.head", heads=("gap",),
    formats=(registry.WeightFormat(".safetensors", "timm / torchvision state dict",
                                   registry.prepare_timm, _timm_resnet),),
    settings_from_params=_settings_from_params, timm_model=_timm_model, prefixes=("resnet",)))
for _name, _constructor in (("resnet18", ResNet18), ("resnet34", ResNet34),
                            ("resnet50", ResNet50)):
    registry.register_backbone(_name, FAMILY, _constructor)
