"""Flax linen ResNet 18/34/50 with stable, named stages for capture and CAMs.

Layout follows torchvision (so timm/torchvision weights map one to one):
`stem` (conv 7x7/2 + BN + ReLU), max-pool, `stage1`..`stage4`, global average
pooling, `head`. Each stage is its own module, so `capture_intermediates`
records its (B, H, W, C) output under the stage's name.
"""
import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

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
    """A run of residual blocks; the first one carries the stride."""
    block_cls: Callable[..., nn.Module]
    num_blocks: int
    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_blocks):
            x = self.block_cls(
                features=self.features, strides=self.strides if i == 0 else 1,
                conv=self.conv, norm=self.norm, name=f"block{i}")(x)
        return x


class ResNet(nn.Module):
    """ResNet classifier with a global-average-pooling head (CAM-ready).

    Input (B, H, W, 3) float, normalised; output logits (B, num_classes) float32.
    Named intermediate outputs (capture with `capture_intermediates`):
      stem (B, H/2, W/2, width), stage1 (H/4), stage2 (H/8),
      stage3 (H/16, or H/8 with large_maps), stage4 (H/32, or H/8 with large_maps).
    """
    stage_sizes: Sequence[int]
    block_cls: Callable[..., nn.Module]
    num_classes: int
    width: int = 64               # channels of the stem; stages use 1x, 2x, 4x, 8x
    large_maps: bool = False      # stride 1 in stage3 and stage4 (the paper's CAM setting)
    dtype: Any = jnp.float32      # compute dtype (bfloat16 for mixed precision)
    bn_axis_name: Optional[str] = None  # named batch axis: BN statistics over all devices

    cam_layer = "stage4"   # features whose GAP feeds the head
    head_name = "head"
    gap_head = True        # logits = mean_hw(cam_layer) @ head.kernel + bias: CAM applies

    @nn.compact
    def __call__(self, x, train: bool = False):
        # Symmetric k//2 padding as in torchvision (SAME would pad 3x3/2 convs asymmetrically).
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, padding=0)
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON, dtype=self.dtype, axis_name=self.bn_axis_name if train else None)
        x = Stem(self.width, conv, norm, name="stem")(x.astype(self.dtype))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
        strides = (1, 2, 1, 1) if self.large_maps else (1, 2, 2, 2)
        for i, (n, s) in enumerate(zip(self.stage_sizes, strides)):
            x = Stage(self.block_cls, n, self.width * 2 ** i, s, conv, norm,
                      name=f"stage{i + 1}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=jnp.float32, name=self.head_name)(
            x.astype(jnp.float32))


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
