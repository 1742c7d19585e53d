"""APViT (Xue et al., IEEE TAC 2022): an IR-50 face CNN, attentive pooling, a ViT over its grid.

Flax linen, in the layout of APViT's published RAF-DB configuration (docs/method.md,
"APViT"):
  stem              conv 3x3/1 (64) + BN + PReLU, (B, H, W, 64)
  stage1..stage3    the first three stages of face.evoLVe's IR-50 (3, 4, 14 "IR" units
                    of 64, 128, 256 channels, each stage halving the grid): stage3 is
                    (B, H/8, W/8, 256), 14x14 at 112 px: the grid the AU loss aligns
  proj              1x1 conv (with bias) to the ViT width D, (B, h, w, D)
  patch_scores      sum_c |proj| per cell, (B, h, w, 1): Attentive Patch Pooling keeps
                    the `keep_patches` cells with the largest score (k = 160 of 196)
  kept_patches      (B, k) int: the kept cells, row-major grid indices, ascending
  encoder{i}        a pre-norm transformer block (fer_jax.models.vit's Attention and
                    Mlp) that, with Attentive Token Pooling, keeps after its attention
                    the int(n * keep_rate) patch tokens the class token attends to most
                    (the pre-softmax logits of its row, summed over heads)
  encoder{i}/kept   (B, 1 + n_i) int: each remaining token's position in the full
                    sequence (0 = the class token, 1 + j = grid cell j)
  encoder{i}/attn/probs   the block's attention probabilities over its own tokens
  encoder{i}/probs_grid   the same placed on the full (1 + h*w) sequence, zero at the
                    positions that were dropped before this block: the taps of the
                    attention CAM methods (`attention_layers`; rollout then treats a
                    dropped token as attending to itself only)
  encoder_norm, head      final LayerNorm; logits = head(class token)

An "IR" unit (face.evoLVe's bottleneck_IR): BN, conv 3x3, PReLU, conv 3x3 (the stride),
BN, plus a shortcut: the input subsampled by the stride (same width) or a strided 1x1
conv + BN. Parameter-free tap modules (`TokenGrid`, `AttentionProbs`, `TokenPositions`)
give the grids, scores and choices stable capture names without changing any number.

Weights: a face.evoLVe IR-50 `.pth` state dict and a timm ViT state dict (the original
ViT-S of APViT: D 768, 8 heads, MLP x3, no qkv bias), mapped by this family's formats;
`python -m fer_jax.convert_weights --model=apvit --input=IR50.pth --input=VIT.pth ...`
merges the two. `proj` is in neither file and starts fresh, as in APViT.
"""
import functools
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax import methods
from fer_jax.errors import ConfigError
from fer_jax.models import registry, vit

ModuleDef = Any

# face.evoLVe's BatchNorm: torch defaults (momentum 0.1, i.e. flax 0.9; eps 1e-5).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_LN_EPSILON = 1e-6   # APViT's norm_layer_eps


class PReLU(nn.Module):
    """torch.nn.PReLU(C): x where x >= 0, slope_c * x elsewhere; slopes start at 0.25."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.param("negative_slope", nn.initializers.constant(0.25), (x.shape[-1],))
        return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


class TokenPositions(nn.Module):
    """Identity on integer token positions (B, n): gives a pooling's choice a capture name.

    `capture_kind` keeps them out of the feature and attention layers (fer_jax.capture).
    """
    capture_kind = "positions"

    @nn.compact
    def __call__(self, positions: jax.Array) -> jax.Array:
        return positions


class Stem(nn.Module):
    """conv 3x3 stride 1 + BN + PReLU: (B, H, W, 3) -> (B, H, W, width)."""
    width: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(self.width, (3, 3), padding=1, name="conv")(x)
        return PReLU(name="prelu")(self.norm(name="bn")(x))


class IRUnit(nn.Module):
    """face.evoLVe's bottleneck_IR: BN, conv 3x3, PReLU, conv 3x3 (stride), BN + shortcut.

    The shortcut is the input subsampled by the stride when the width is unchanged
    (torch's MaxPool2d(1, stride)), else a strided 1x1 conv + BN. No activation after
    the sum. (B, H, W, C) -> (B, H / stride, W / stride, features).
    """
    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.strides
        y = self.norm(name="bn1")(x)
        y = self.conv(self.features, (3, 3), padding=1, name="conv1")(y)
        y = PReLU(name="prelu")(y)
        y = self.conv(self.features, (3, 3), (s, s), padding=1, name="conv2")(y)
        y = self.norm(name="bn2")(y)
        if x.shape[-1] == self.features:
            shortcut = x[:, ::s, ::s]
        else:
            shortcut = self.conv(self.features, (1, 1), (s, s), name="shortcut_conv")(x)
            shortcut = self.norm(name="shortcut_bn")(shortcut)
        return y + shortcut


class IRStage(nn.Module):
    """`num_units` IR units; the first halves the grid."""
    num_units: int
    features: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_units):
            x = IRUnit(self.features, 2 if i == 0 else 1, self.conv, self.norm,
                       name=f"unit{i}")(x)
        return x


def top_positions(scores: jax.Array, k: int) -> jax.Array:
    """Indices of the k largest of each row of `scores` (B, n), ascending: (B, k) int32.

    Ascending order keeps the tokens in grid order, as APViT sorts its top-k indices.
    """
    _, idx = jax.lax.top_k(scores, k)
    return jnp.sort(idx, axis=-1)


def _take(x: jax.Array, idx: jax.Array) -> jax.Array:
    """x (B, n, ...) at the indices idx (B, k) along axis 1 -> (B, k, ...)."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


class PoolingBlock(nn.Module):
    """A pre-norm transformer block with Attentive Token Pooling between its two halves.

    tokens (B, 1 + n, D) with the class token first, positions (B, 1 + n) int ->
    (tokens (B, 1 + m, D), positions (B, 1 + m)), m = max(int(n * keep_rate), 1).
    After x + attn(norm1(x)), the m patch tokens with the largest class-token attention
    logits (summed over heads, before the softmax) stay, in their order; then
    x + mlp(norm2(x)). keep_rate 1 keeps every token.
    """
    num_heads: int
    keep_rate: float = 1.0
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dtype: Any = jnp.float32
    dropout: float = 0.0
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array, num_positions: int,
                 train: bool = False) -> Tuple[jax.Array, jax.Array]:
        norm = functools.partial(nn.LayerNorm, epsilon=_LN_EPSILON, dtype=self.dtype)
        y, logits = vit.Attention(self.num_heads, self.dtype, self.dropout, self.qkv_bias,
                                  return_logits=True, name="attn")(norm(name="norm1")(tokens),
                                                                   train)
        # The probabilities on the full sequence, for the attention CAMs (one-hot
        # placement: exact, and unused outputs cost nothing under jit).
        place = jax.nn.one_hot(positions, num_positions, dtype=jnp.float32)  # (B, N, M)
        vit.AttentionProbs(name="probs_grid")(jnp.einsum(
            "bqm,bhqk,bkn->bhmn", place, jax.nn.softmax(logits, axis=-1), place))
        tokens = tokens + vit.DropPath(self.drop_path)(y, train)
        n = tokens.shape[1] - 1
        keep = max(int(n * self.keep_rate), 1)
        if keep < n:
            scores = jnp.sum(logits[:, :, 0, 1:], axis=1)              # (B, n)
            idx = top_positions(scores, keep) + 1                      # past the class token
            idx = jnp.concatenate([jnp.zeros((idx.shape[0], 1), idx.dtype), idx], axis=1)
            tokens, positions = _take(tokens, idx), _take(positions, idx)
        positions = TokenPositions(name="kept")(positions)
        y = vit.Mlp(int(tokens.shape[-1] * self.mlp_ratio), self.dtype, self.dropout,
                    name="mlp")(norm(name="norm2")(tokens), train)
        return tokens + vit.DropPath(self.drop_path)(y, train), positions


class APViT(nn.Module):
    """APViT classifier: IR CNN grid -> Attentive Patch Pooling -> pooling ViT -> class token.

    Input (B, H, W, 3) float, normalised, H and W multiples of `patch_size` (8 with three
    IR stages); output logits (B, num_classes) float32. The position embeddings are
    learned on the `image_size` grid and resampled (bicubic, antialiased) for other grids.
    `labels` is accepted like the other models' and unused.
    """
    num_classes: int
    stem_width: int = 64
    stage_widths: Sequence[int] = (64, 128, 256)
    stage_units: Sequence[int] = (3, 4, 14)      # IR-50's first three stages
    embed_dim: int = 768
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 3.0
    qkv_bias: bool = False
    keep_patches: int = 160                      # k of Attentive Patch Pooling
    keep_rates: Sequence[float] = (1.0,) * 4 + (0.9,) * 4   # per block, Attentive Token Pooling
    image_size: int = 112         # the position-embedding grid is image_size / patch_size
    dropout: float = 0.0          # after the position embeddings, attention and MLP layers
    drop_path: float = 0.0        # stochastic depth of the last block (linear from 0)
    dtype: Any = jnp.float32
    bn_axis_name: Optional[str] = None

    # The model contract (fer_jax.models.contract.ExplainableModel).
    head = "token"                  # APViT's only head: a Dense on the class token
    head_name = "head"
    cam_layer_nonnegative = False   # a BN output plus the shortcut: no ReLU
    gap_head = False                # the head reads the class token: no CAM

    @nn.nowrap
    def head_module(self, name: Optional[str] = None) -> methods.TrainingHead:
        """No training-time method's head fits this model: a ValueError saying so."""
        raise ValueError("apvit has only its own head 'token', no training-time method's head")

    @property
    def patch_size(self) -> int:
        """Input pixels per cell of the IR grid (each stage halves it)."""
        return 2 ** len(self.stage_widths)

    @property
    def cam_layer(self) -> str:
        """The last CNN grid (the aligned layer); the per-layer CAMs' default."""
        return f"stage{len(self.stage_widths)}"

    @property
    def default_cam_layers(self) -> Tuple[str, ...]:
        return (self.cam_layer,)

    @property
    def attention_layers(self) -> Tuple[str, ...]:
        """Every block's attention on the full token sequence, first block first."""
        return tuple(f"encoder{i}/probs_grid" for i in range(self.depth))

    @property
    def pos_grid(self) -> Tuple[int, int]:
        """(h, w) grid of the stored position embeddings."""
        return vit.patch_grid(self.image_size, self.patch_size)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 labels: Optional[jax.Array] = None) -> jax.Array:
        if len(self.keep_rates) != self.depth:
            raise ValueError(f"keep_rates has {len(self.keep_rates)} entries, expected one "
                             f"per block (depth={self.depth})")
        if x.ndim != 4 or x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
            raise ValueError(f"input of shape {x.shape}: expected (B, H, W, C) with H and W "
                             f"multiples of patch_size={self.patch_size}")
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, padding=0)
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON, dtype=self.dtype, axis_name=self.bn_axis_name if train else None)
        x = Stem(self.stem_width, conv, norm, name="stem")(x.astype(self.dtype))
        for i, (units, width) in enumerate(zip(self.stage_units, self.stage_widths)):
            x = IRStage(units, width, conv, norm, name=f"stage{i + 1}")(x)

        grid = nn.Conv(self.embed_dim, (1, 1), dtype=self.dtype, name="proj")(x)
        b, h, w, d = grid.shape
        # Attentive Patch Pooling: APViT's SUM_ABS_1 score of the projected cells.
        scores = vit.TokenGrid(name="patch_scores")(
            jnp.sum(jnp.abs(grid.astype(jnp.float32)), axis=-1, keepdims=True))
        gh, gw = self.pos_grid
        cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, d))
        pos = self.param("pos_embed", nn.initializers.truncated_normal(0.02), (1, 1 + gh * gw, d))
        pos = vit.resample_pos_embed(pos, (h, w), (gh, gw)).astype(self.dtype)
        patches = grid.reshape(b, h * w, d) + pos[:, 1:]
        keep = TokenPositions(name="kept_patches")(
            top_positions(scores.reshape(b, h * w), min(self.keep_patches, h * w)))
        patches = _take(patches, keep)
        cls = jnp.broadcast_to(cls.astype(self.dtype) + pos[:, :1], (b, 1, d))
        tokens = nn.Dropout(self.dropout, deterministic=not train)(
            jnp.concatenate([cls, patches], axis=1))
        positions = jnp.concatenate([jnp.zeros((b, 1), keep.dtype), keep + 1], axis=1)

        for i, rate in enumerate(self.keep_rates):
            tokens, positions = PoolingBlock(
                self.num_heads, rate, self.mlp_ratio, self.qkv_bias, self.dtype, self.dropout,
                self.drop_path * i / max(self.depth - 1, 1), name=f"encoder{i}")(
                    tokens, positions, 1 + h * w, train)
        tokens = nn.LayerNorm(epsilon=_LN_EPSILON, dtype=self.dtype, name="encoder_norm")(tokens)
        return nn.Dense(self.num_classes, dtype=jnp.float32, name=self.head_name,
                        kernel_init=nn.initializers.truncated_normal(0.02))(
                            tokens[:, 0].astype(jnp.float32))


_HEADS = ("token",)   # the class-token head, selected by config.model.vit_head

# APViT's published RAF-DB configuration (IR-50 stages 1-3, 112 px, ViT-S of the original
# timm layout with 8 blocks, k = 160, keep rate 0.9 in the last four blocks).
APVIT = functools.partial(APViT)
# A CPU-sized variant for synthetic_faces (64 px -> an 8x8 grid of 64 cells): keeps
# 52 of them (APViT's 160 / 196) and 0.9 of the tokens in the last two of four blocks.
APVIT_MICRO = functools.partial(
    APViT, stem_width=16, stage_widths=(16, 32, 64), stage_units=(1, 2, 2), embed_dim=128,
    depth=4, num_heads=4, keep_patches=52, keep_rates=(1.0, 1.0, 0.9, 0.9), image_size=64)


# -- the family record -------------------------------------------------------------------

def _build(constructor: Callable[..., APViT], model_config: Any, num_classes: int,
           bn_axis_name: Optional[str], dtype: Any) -> APViT:
    if model_config.vit_head not in _HEADS:
        raise ConfigError(f"config.model.vit_head={model_config.vit_head!r}: APViT's head reads "
                          f"the class token; set one of {list(_HEADS)}")
    return constructor(num_classes=num_classes, image_size=model_config.vit_pos_size,
                       dropout=model_config.dropout, drop_path=model_config.drop_path,
                       dtype=dtype, bn_axis_name=bn_axis_name)


# face.evoLVe's module indices: res_layer.{0..4} and shortcut_layer.{0, 1}.
_IR_MODULES = {("res_layer", "0"): "bn1", ("res_layer", "1"): "conv1",
               ("res_layer", "2"): "prelu", ("res_layer", "3"): "conv2",
               ("res_layer", "4"): "bn2", ("shortcut_layer", "0"): "shortcut_conv",
               ("shortcut_layer", "1"): "shortcut_bn"}
_STEM_MODULES = {"0": "conv", "1": "bn", "2": "prelu"}
_NUM_STAGES = 3   # APViT reads the third stage; IR-50's fourth is never built


def _prepare(tensors: Mapping[str, Any], path: str) -> Tuple[Dict[str, Any], List[str]]:
    """face.evoLVe IR and/or timm ViT tensors: face.evoLVe's flat unit list `body.{n}.*`
    regrouped into stages (`body.{stage}.{unit}.*`, APViT's own layout, also read); what
    APViT does not build is skipped with the reason."""
    rest, skipped = registry.prepare_timm(tensors, path)
    # A stage starts at the first unit and at every unit with a projection shortcut
    # (the width changes there; face.evoLVe's first stage keeps 64 channels).
    flat = sorted({int(m.group(1)) for k in rest
                   if (m := re.fullmatch(r"body\.(\d+)\.(?:res|shortcut)_layer\..+", k))})
    place, stage, unit = {}, 0, 0
    for i, n in enumerate(flat):
        if i and f"body.{n}.shortcut_layer.0.weight" in rest:
            stage, unit = stage + 1, 0
        place[n] = (stage, unit)
        unit += 1
    out = {}
    for key, value in rest.items():
        m = re.fullmatch(r"body\.(\d+)\.((?:res|shortcut)_layer\..+)", key)
        if m:
            key = "body.{}.{}.{}".format(*place[int(m.group(1))], m.group(2))
        m = re.fullmatch(r"body\.(\d+)\.\d+\..+", key)
        if m and int(m.group(1)) >= _NUM_STAGES:
            skipped.append(f"{key} (IR stage {int(m.group(1)) + 1}: APViT reads stage 3)")
        elif key.startswith("output_layer."):
            skipped.append(f"{key} (the face-recognition embedding head, unused)")
        elif key.startswith("patch_embed."):
            skipped.append(f"{key} (ViT patch embedding: APViT's tokens are the IR grid)")
        else:
            out[key] = value
    return out, skipped


def _mapping(key: str, w: Any, shape_of: registry.ShapeOf) -> registry.Mapped:
    """face.evoLVe IR (stem `input_layer.*`, units `body.{stage}.{unit}.*`) and the timm
    ViT's blocks, norm, tokens and head (the vit family's mapping) -> fer_jax.models.apvit."""
    m = re.fullmatch(r"input_layer\.(\d)\.(\w+)", key)
    if m and m.group(1) in _STEM_MODULES:
        module: Tuple[str, ...] = ("stem", _STEM_MODULES[m.group(1)])
    else:
        m = re.fullmatch(r"body\.(\d+)\.(\d+)\.(res_layer|shortcut_layer)\.(\d)\.(\w+)", key)
        if not m:
            return vit.FAMILY.formats[0].mapping(key, w, shape_of)
        if (m.group(3), m.group(4)) not in _IR_MODULES:
            return None
        module = (f"stage{int(m.group(1)) + 1}", f"unit{m.group(2)}",
                  _IR_MODULES[(m.group(3), m.group(4))])
    leaf = m.groups()[-1]
    if module[-1] == "prelu":
        return [(("params",) + module + ("negative_slope",), w)] if leaf == "weight" else None
    if "conv" in module[-1]:
        return ([(("params",) + module + ("kernel",), registry.oihw_to_hwio(w))]
                if leaf == "weight" else None)
    if leaf in registry.BN_LEAVES:
        collection, flax_leaf = registry.BN_LEAVES[leaf]
        return [((collection,) + module + (flax_leaf,), w)]
    return None


def _settings_from_params(model_config: Any, params: Mapping[str, Any],
                          constructor: Callable[..., APViT]) -> None:
    if "pos_embed" in params:
        grid = int(round((params["pos_embed"].shape[1] - 1) ** 0.5))
        model_config.vit_pos_size = grid * constructor(num_classes=1).patch_size


# The two files (IR .pth, ViT .pth or .safetensors) hold disjoint keys: one mapping reads
# either or both merged (fer_jax.convert_weights --input twice).
_FORMATS = tuple(
    registry.WeightFormat(ext, "face.evoLVe IR-50 and timm ViT state dicts", _prepare,
                          _mapping, "bicubic", fresh=("proj",))
    for ext in (".pth", ".safetensors"))

FAMILY = registry.register_family(registry.Family(
    name="apvit", title="APViT", build=_build, head_key="model.vit_head", heads=_HEADS,
    formats=_FORMATS, settings_from_params=_settings_from_params, prefixes=("apvit",)))
for _name, _constructor in (("apvit", APVIT), ("apvit_micro", APVIT_MICRO)):
    registry.register_backbone(_name, FAMILY, _constructor)

