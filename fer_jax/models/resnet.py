"""Flax linen ResNet 18/34/50 with stable, named stages for capture and CAMs.

Layout follows torchvision (so timm/torchvision weights map one to one):
`stem` (conv 7x7/2 + BN + ReLU), max-pool, `stage1`..`stage4`, global average
pooling, `head`. Each stage is its own module, so `capture_intermediates`
records its (B, H, W, C) output under the stage's name.

Training-time CAM methods (fer_jax.models.wsol): `head` replaces the linear GAP
head by WILDCAT, ACoL or PRM on `stage4`; `adl` inserts ADL layers where the
reference code puts them (`_ADL_AFTER`).
"""
import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import wsol

ModuleDef = Any

# torchvision's BatchNorm: momentum 0.1 (flax: 0.9), eps 1e-5.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5

# ADL positions, as the reference code (which follows ADL's ResNet-50): after the first
# block of stage3, after the first block of stage4 and after the last one (stage index ->
# block indices, -1 = the last block). The stage4 output, which CAMs and the alignment
# read, is thus the output of an ADL layer (identity in evaluation).
_ADL_AFTER = {3: (0,), 4: (0, -1)}


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

    adl_after: indices of the blocks followed by an ADL layer `adl{i}` (-1 = the last).
    """
    block_cls: Callable[..., nn.Module]
    num_blocks: int
    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    adl_after: Tuple[int, ...] = ()
    adl_options: wsol.Options = wsol.Options()

    @nn.compact
    def __call__(self, x, train: bool = False):
        after = {i % self.num_blocks for i in self.adl_after}
        for i in range(self.num_blocks):
            x = self.block_cls(
                features=self.features, strides=self.strides if i == 0 else 1,
                conv=self.conv, norm=self.norm, name=f"block{i}")(x)
            if i in after:
                x = wsol.ADL(self.adl_options.adl_drop_rate, self.adl_options.adl_threshold,
                             name=f"adl{i}")(x, train)
        return x


class ResNet(nn.Module):
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
    head: str = "gap"             # "gap" (linear on the global average) or wsol.HEADS' CNN heads
    adl: bool = False             # ADL layers (training only) at _ADL_AFTER
    wsol_options: wsol.Options = wsol.Options()   # settings of the head and of ADL

    cam_layer = "stage4"   # features the head reads
    cam_layer_nonnegative = True   # it ends in a ReLU (cams.engine.identical_methods)
    head_name = "head"

    @property
    def gap_head(self) -> bool:
        """True when logits = mean_hw(cam_layer) @ head.kernel + bias (CAM applies)."""
        return self.head == "gap"

    @nn.nowrap   # also called outside the model (CAM engine): a top-level module then
    def head_module(self, name: Optional[str] = None) -> nn.Module:
        """The training-time head (not "gap"); ACoL's branches have 16 x width channels
        (1024 at the standard width 64, as ACoL and the reference code)."""
        return wsol.make_head(self.head, self.num_classes, self.wsol_options,
                              hidden=16 * self.width, dtype=self.dtype, name=name)

    @nn.compact
    def __call__(self, x, train: bool = False, labels: Optional[jnp.ndarray] = None):
        # Symmetric k//2 padding as in torchvision (SAME would pad 3x3/2 convs asymmetrically).
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, padding=0)
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON, dtype=self.dtype, axis_name=self.bn_axis_name if train else None)
        x = Stem(self.width, conv, norm, name="stem")(x.astype(self.dtype))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
        strides = (1, 2, 1, 1) if self.large_maps else (1, 2, 2, 2)
        for i, (n, s) in enumerate(zip(self.stage_sizes, strides)):
            adl_after = _ADL_AFTER.get(i + 1, ()) if self.adl else ()
            x = Stage(self.block_cls, n, self.width * 2 ** i, s, conv, norm, adl_after,
                      self.wsol_options, name=f"stage{i + 1}")(x, train)
        if self.head != "gap":
            return self.head_module(name=self.head_name)(x, train, labels)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=jnp.float32, name=self.head_name)(
            x.astype(jnp.float32))


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
