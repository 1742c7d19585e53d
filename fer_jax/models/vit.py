"""Flax linen Vision Transformer (ViT / DeiT) with capturable (B, h, w, D) token grids.

Layout and numerics follow timm's `VisionTransformer` (class token, learned
position embeddings, pre-norm blocks, LayerNorm eps 1e-6, exact GELU), so timm
and Google ViT/AugReg weights load one to one (see fer_jax.weights).

Stable names (capture them with `capture_intermediates`):
  encoder{i}          the i-th transformer block, (B, 1 + h*w, D) tokens -> tokens
  block{i}            the i-th block's output as a (B, h, w, D) grid, class token dropped
  encoder_norm_grid   the final-normed patch tokens as a (B, h, w, D) grid
  encoder{i}/attn/probs  the i-th block's attention probabilities (B, heads, N, N),
                      N = 1 + h*w, token 0 the class token (float32, rows sum to 1)
where h = H / patch and w = W / patch. `block{i}` and `encoder_norm_grid` are
parameter-free modules that sit *on* the forward path (tokens -> grid -> module
-> tokens), so an interceptor that perturbs their output changes the logits and
gradient-based CAMs see a non-zero gradient.
"""
import functools
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import methods
from fer_jax.models import contract, registry

# timm and Google ViT both use LayerNorm eps 1e-6 (flax's default, torch's is 1e-5).
_LN_EPSILON = 1e-6
_NUM_PREFIX_TOKENS = 1  # the class token

Dtype = Any


def resample_pos_embed(
    pos_embed: jax.Array,
    new_grid: Sequence[int],
    old_grid: Sequence[int],
    method: str = "bicubic",
    antialias: bool = True,
) -> jax.Array:
    """Resamples learned position embeddings to another patch grid.

    Same result as timm's `resample_abs_pos_embed`: the class token's entry is
    kept, the (old_h, old_w) grid part is resized in float32. timm resamples with
    bicubic + antialias at run time and in `checkpoint_filter_fn`, and with
    bilinear without antialias when it loads Google `.npz` files; `jax.image`
    uses the same kernels (Keys a=-0.5 cubic with truncated, renormalised windows
    = torch's antialiased bicubic; bilinear with edge renormalisation = torch's
    clamped bilinear, align_corners=False).

    Args:
      pos_embed: (1, 1 + old_h * old_w, D).
      new_grid: (new_h, new_w) patch grid.
      old_grid: (old_h, old_w) patch grid that `pos_embed` was learned on.
      method: "bicubic" or "bilinear".
      antialias: low-pass filter when downsampling (as torch's `antialias=`).
    Returns:
      (1, 1 + new_h * new_w, D), same dtype as `pos_embed`.
    """
    new_grid, old_grid = tuple(new_grid), tuple(old_grid)
    expected = _NUM_PREFIX_TOKENS + old_grid[0] * old_grid[1]
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != expected:
        raise ValueError(
            f"pos_embed of shape {pos_embed.shape} does not fit old_grid={old_grid}: "
            f"expected (1, {expected}, D)")
    if method not in ("bicubic", "bilinear"):
        raise ValueError(f"method={method!r}: expected 'bicubic' or 'bilinear'")
    if new_grid == old_grid:
        return pos_embed
    dim = pos_embed.shape[-1]
    prefix, grid = pos_embed[:, :_NUM_PREFIX_TOKENS], pos_embed[:, _NUM_PREFIX_TOKENS:]
    grid = grid.astype(jnp.float32).reshape(old_grid + (dim,))
    grid = jax.image.resize(grid, new_grid + (dim,), method=method, antialias=antialias)
    grid = grid.reshape(1, new_grid[0] * new_grid[1], dim).astype(pos_embed.dtype)
    return jnp.concatenate([prefix, grid], axis=1)


def patch_grid(image_size: int, patch_size: int) -> Tuple[int, int]:
    """(h, w) grid of `patch_size` cells over a square `image_size` input (the position
    embeddings' grid); a ValueError naming both when one does not divide the other."""
    if image_size % patch_size:
        raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}")
    n = image_size // patch_size
    return (n, n)

class TokenGrid(nn.Module):
    """Identity on a (B, h, w, D) grid; exists so the grid gets a stable capture name."""

    @nn.compact
    def __call__(self, grid: jax.Array) -> jax.Array:
        return grid


def _through_grid(tokens: jax.Array, grid_hw: Tuple[int, int], name: str) -> jax.Array:
    """Passes the patch tokens through a named `TokenGrid` as (B, h, w, D), class token aside.

    tokens: (B, 1 + h*w, D) -> same shape and values.
    """
    b, _, d = tokens.shape
    grid = tokens[:, _NUM_PREFIX_TOKENS:].reshape(b, grid_hw[0], grid_hw[1], d)
    grid = TokenGrid(name=name)(grid)
    return jnp.concatenate(
        [tokens[:, :_NUM_PREFIX_TOKENS], grid.reshape(b, grid_hw[0] * grid_hw[1], d)], axis=1)


class AttentionProbs(nn.Module):
    """Identity on attention probabilities (B, heads, N, N): gives them a capture name.

    `capture_kind` tells fer_jax.capture that this output is attention, not a
    (B, h, w, C) feature grid.
    """
    capture_kind = "attention"

    @nn.compact
    def __call__(self, probs: jax.Array) -> jax.Array:
        return probs


class Attention(nn.Module):
    """Multi-head self-attention with separate query/key/value projections.

    Separate (D, heads, head_dim) kernels mirror Google's layout; timm's fused
    `qkv` Linear is split on import. (B, N, D) -> (B, N, D); with `return_logits`,
    also the pre-softmax logits (B, heads, N, N) float32 (APViT ranks tokens by them,
    fer_jax.models.apvit).
    """
    num_heads: int
    dtype: Dtype = jnp.float32
    dropout: float = 0.0
    qkv_bias: bool = True         # biases of query, key, value (the original timm ViT-S has none)
    return_logits: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> Any:
        dim = x.shape[-1]
        if dim % self.num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads={self.num_heads}")
        head_dim = dim // self.num_heads
        dense = functools.partial(
            nn.DenseGeneral, features=(self.num_heads, head_dim), axis=-1, dtype=self.dtype,
            use_bias=self.qkv_bias, kernel_init=nn.initializers.xavier_uniform())
        q = dense(name="query")(x) * (head_dim ** -0.5)
        k = dense(name="key")(x)
        v = dense(name="value")(x)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        # Softmax in float32: bf16 logits lose too much for long token sequences.
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        weights = AttentionProbs(name="probs")(weights).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        out = nn.DenseGeneral(dim, axis=(-2, -1), dtype=self.dtype,
                              kernel_init=nn.initializers.xavier_uniform(), name="out")(out)
        out = nn.Dropout(self.dropout, deterministic=not train)(out)
        return (out, logits.astype(jnp.float32)) if self.return_logits else out


class Mlp(nn.Module):
    """fc1 (D -> hidden), exact GELU, fc2 (hidden -> D). (B, N, D) -> (B, N, D)."""
    hidden_dim: int
    dtype: Dtype = jnp.float32
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dim = x.shape[-1]
        dense = functools.partial(nn.Dense, dtype=self.dtype,
                                  kernel_init=nn.initializers.xavier_uniform(),
                                  bias_init=nn.initializers.normal(1e-6))
        x = nn.gelu(dense(self.hidden_dim, name="fc1")(x), approximate=False)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = dense(dim, name="fc2")(x)
        return nn.Dropout(self.dropout, deterministic=not train)(x)


class DropPath(nn.Module):
    """Stochastic depth: zeroes a whole residual branch per sample (rng 'dropout')."""
    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)). (B, N, D) -> same."""
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Dtype = jnp.float32
    dropout: float = 0.0
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = functools.partial(nn.LayerNorm, epsilon=_LN_EPSILON, dtype=self.dtype)
        y = Attention(self.num_heads, self.dtype, self.dropout, name="attn")(norm(name="norm1")(x), train)
        x = x + DropPath(self.drop_path)(y, train)
        y = Mlp(int(x.shape[-1] * self.mlp_ratio), self.dtype, self.dropout, name="mlp")(
            norm(name="norm2")(x), train)
        return x + DropPath(self.drop_path)(y, train)


class ViT(contract.MethodHeads, nn.Module):
    """Vision Transformer classifier (ViT / DeiT) with a class-token or GAP head.

    Input (B, H, W, 3) float, normalised, H and W multiples of `patch_size`;
    output logits (B, num_classes) float32. The position embeddings are learned
    on the `image_size` grid and resampled (bicubic, antialiased, as timm's
    `dynamic_img_size`) when the input grid differs.

    head="token": logits = head(encoder_norm(tokens)[:, 0]) (timm / DeiT default).
    head="gap":   logits = head(mean over patches of encoder_norm(tokens)[:, 1:]);
      as every patch token is normed before the mean, the CAM
      `capture(cam_layer) @ head.kernel` (B, h, w, K) averages to logits - bias.
      (timm's `global_pool='avg', fc_norm=False` is the same model.)
    head=<a training-time method's head> (fer_jax.methods, e.g. "tscam": a 3x3 conv over
      the normed patch grid gives K semantic maps whose means are the logits): the
      head reads the normed patch grid.
    `labels` is accepted like the ResNet's and unused (no ViT head erases by class).

    Named (B, h, w, D) outputs: `block0`..`block{depth-1}`, `encoder_norm_grid`.
    """
    num_classes: int
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    image_size: int = 224         # pretraining size: fixes the pos_embed grid
    head: str = "gap"             # "gap" (CAM-ready), "token" or a method's head ("tscam")
    dropout: float = 0.0          # after pos-embed, attention projection and MLP layers
    drop_path: float = 0.0        # stochastic depth of the last block (linear from 0)
    dtype: Dtype = jnp.float32    # compute dtype (bfloat16 for mixed precision)

    # The rest of the model contract (fer_jax.models.contract.ExplainableModel; the head's
    # part comes with MethodHeads, patch_size is a field above).
    cam_layer_nonnegative = False   # LayerNorm outputs take either sign

    @property
    def attention_layers(self) -> Tuple[str, ...]:
        """Capture names of every block's attention probabilities, first block first."""
        return tuple(f"encoder{i}/attn/probs" for i in range(self.depth))

    @property
    def cam_layer(self) -> str:
        """The layer the head reads: the final-normed grid for the 'gap' head and a method's
        (what `cam` and the built-in maps such as `tscam` need), else the last block."""
        return "encoder_norm_grid" if self.head != "token" else f"block{self.depth - 1}"

    @property
    def default_cam_layers(self) -> Tuple[str, ...]:
        """Layers of the per-layer CAM methods (Grad-CAM family, Score-CAM, Eigen-CAM) when
        none are given: the last block's (B, h, w, D) grid, whatever the head.

        Not `cam_layer`: after the final LayerNorm a GAP-linear head has the gradient
        W[:, k] / (h w) at every token, so gradient maps there are CAM, and CAM reads the
        class off each normed token. Attention has spread the class into every token by
        then, and LayerNorm removes each token's channel mean and norm, where the AU
        evidence sits; on the synthetic ViT demo those maps rank the background first
        (docs/method.md, "CAM methods").
        """
        return (f"block{self.depth - 1}",)

    @property
    def pos_grid(self) -> Tuple[int, int]:
        """(h, w) patch grid of the stored position embeddings."""
        return patch_grid(self.image_size, self.patch_size)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 labels: Optional[jax.Array] = None) -> jax.Array:
        valid = list(_HEADS) + methods.heads(FAMILY.head_key)
        if self.head not in valid:
            raise ValueError(f"head={self.head!r}: expected one of {valid}")
        if x.ndim != 4 or x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
            raise ValueError(
                f"input of shape {x.shape}: expected (B, H, W, C) with H and W multiples of "
                f"patch_size={self.patch_size}")
        b = x.shape[0]
        x = nn.Conv(self.embed_dim, (self.patch_size,) * 2, (self.patch_size,) * 2,
                    padding="VALID", dtype=self.dtype, name="patch_embed")(x.astype(self.dtype))
        grid_hw = (x.shape[1], x.shape[2])
        tokens = x.reshape(b, grid_hw[0] * grid_hw[1], self.embed_dim)

        gh, gw = self.pos_grid
        cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, self.embed_dim))
        pos = self.param("pos_embed", nn.initializers.truncated_normal(0.02),
                         (1, _NUM_PREFIX_TOKENS + gh * gw, self.embed_dim))
        pos = resample_pos_embed(pos, grid_hw, (gh, gw))
        cls = jnp.broadcast_to(cls, (b, 1, self.embed_dim)).astype(tokens.dtype)
        tokens = (jnp.concatenate([cls, tokens], axis=1) + pos).astype(self.dtype)
        tokens = nn.Dropout(self.dropout, deterministic=not train)(tokens)

        for i in range(self.depth):
            rate = self.drop_path * i / max(self.depth - 1, 1)
            tokens = EncoderBlock(self.num_heads, self.mlp_ratio, self.dtype, self.dropout, rate,
                                  name=f"encoder{i}")(tokens, train)
            tokens = _through_grid(tokens, grid_hw, f"block{i}")

        tokens = nn.LayerNorm(epsilon=_LN_EPSILON, dtype=self.dtype, name="encoder_norm")(tokens)
        tokens = _through_grid(tokens, grid_hw, "encoder_norm_grid")
        if self.head not in _HEADS:
            grid = tokens[:, _NUM_PREFIX_TOKENS:].reshape(b, grid_hw[0], grid_hw[1], -1)
            return self.head_module(name=self.head_name)(grid, train, labels)
        if self.head == "token":
            features = tokens[:, 0]
        else:
            features = jnp.mean(tokens[:, _NUM_PREFIX_TOKENS:].astype(jnp.float32), axis=1)
        return nn.Dense(self.num_classes, dtype=jnp.float32,
                        kernel_init=nn.initializers.truncated_normal(0.02),
                        name=self.head_name)(features.astype(jnp.float32))


_HEADS = ("gap", "token")   # the ViT's own heads; the others are methods' (fer_jax.methods)

# (patch_size, embed_dim, depth, num_heads); DeiT (without distillation token) is the same network.
_VARIANTS = {
    # A small ViT for CPU runs on 64 px synthetic faces (an 8x8 token grid).
    "vit_micro_patch8": (8, 128, 6, 4),
    "vit_tiny_patch16": (16, 192, 12, 3),
    "vit_small_patch16": (16, 384, 12, 6),
    "vit_base_patch16": (16, 768, 12, 12),
    "vit_base_patch32": (32, 768, 12, 12),
    "deit_tiny_patch16": (16, 192, 12, 3),
    "deit_small_patch16": (16, 384, 12, 6),
    "deit_base_patch16": (16, 768, 12, 12),
}


def _variant(name: str) -> Callable[..., ViT]:
    patch, dim, depth, heads = _VARIANTS[name]
    return functools.partial(ViT, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads)


VIT_MODELS = {name: _variant(name) for name in _VARIANTS}
"""name -> ViT constructor(num_classes, image_size, head, dropout, drop_path, dtype)."""


# -- the family record -------------------------------------------------------------------

def _build(constructor: Callable[..., ViT], model_config: Any, num_classes: int,
           bn_axis_name: Optional[str], dtype: Any) -> ViT:
    return constructor(
        num_classes=num_classes, dtype=dtype, head=model_config.vit_head,
        image_size=model_config.vit_pos_size, dropout=model_config.dropout,
        drop_path=model_config.drop_path)


def _split_heads(kernel_in_out: Any, target: Optional[Tuple[int, ...]]) -> Any:
    """(D_in, D_out) -> the model's (D_in, heads, head_dim) when the sizes allow it."""
    if target is not None and len(target) == 3 and target[1] * target[2] == kernel_in_out.shape[1]:
        return kernel_in_out.reshape(kernel_in_out.shape[0], target[1], target[2])
    return kernel_in_out   # left as is: reported as mis-shaped


def _timm_vit(key: str, w: Any, shape_of: registry.ShapeOf) -> registry.Mapped:
    """timm VisionTransformer (vit_*/deit_* with class token) -> fer_jax.models.vit."""
    simple = {
        "patch_embed.proj.bias": ("patch_embed", "bias"),
        "cls_token": ("cls_token",), "pos_embed": ("pos_embed",),
        "norm.weight": ("encoder_norm", "scale"), "norm.bias": ("encoder_norm", "bias"),
        "head.bias": (registry.HEAD, "bias"),
    }
    if key in simple:
        return [(("params",) + simple[key], w)]
    if key == "patch_embed.proj.weight":
        return [(("params", "patch_embed", "kernel"), registry.oihw_to_hwio(w))]
    if key == "head.weight":
        return [(("params", registry.HEAD, "kernel"), w.T)]
    m = re.fullmatch(r"blocks\.(\d+)\.(norm[12]|attn\.qkv|attn\.proj|mlp\.fc[12])\.(weight|bias)", key)
    if not m:
        return None
    block, module, leaf = ("params", f"encoder{m.group(1)}"), m.group(2), m.group(3)
    if module.startswith("norm"):
        return [(block + (module, registry.LN_LEAVES[leaf]), w)]
    if module.startswith("mlp"):
        return [(block + ("mlp", module[4:], "kernel" if leaf == "weight" else "bias"),
                 w.T if leaf == "weight" else w)]
    attn = block + ("attn",)
    if module == "attn.proj":
        if leaf == "bias":
            return [(attn + ("out", "bias"), w)]
        target = shape_of(attn + ("out", "kernel"))
        kernel = w.T   # (heads * head_dim, D)
        if target is not None and len(target) == 3 and target[0] * target[1] == kernel.shape[0]:
            kernel = kernel.reshape(target)
        return [(attn + ("out", "kernel"), kernel)]
    # attn.qkv: rows are [q; k; v], each (heads * head_dim) with heads outermost.
    out: List[Tuple[registry.Key, Any]] = []
    for name, part in zip(("query", "key", "value"), np.split(w, 3, axis=0)):
        target = shape_of(attn + (name, "kernel"))
        if leaf == "weight":
            out.append((attn + (name, "kernel"), _split_heads(part.T, target)))
        else:
            heads_dims = None if target is None else tuple(target[1:])
            bias = part.reshape(heads_dims) if heads_dims and np.prod(heads_dims) == part.size else part
            out.append((attn + (name, "bias"), bias))
    return out


_GOOGLE_BLOCK_MODULES: Dict[str, Tuple[str, ...]] = {
    "LayerNorm_0": ("norm1",), "LayerNorm_2": ("norm2",),
    "MlpBlock_3/Dense_0": ("mlp", "fc1"), "MlpBlock_3/Dense_1": ("mlp", "fc2"),
    **{f"MultiHeadDotProductAttention_1/{n}": ("attn", n) for n in ("query", "key", "value", "out")},
}


def _google_vit(key: str, w: Any, shape_of: registry.ShapeOf) -> registry.Mapped:
    """Google ViT / AugReg npz (flax names, already HWIO / (in, out)) -> fer_jax.models.vit."""
    simple = {
        "embedding/kernel": ("patch_embed", "kernel"), "embedding/bias": ("patch_embed", "bias"),
        "cls": ("cls_token",), "Transformer/posembed_input/pos_embedding": ("pos_embed",),
        "Transformer/encoder_norm/scale": ("encoder_norm", "scale"),
        "Transformer/encoder_norm/bias": ("encoder_norm", "bias"),
        "head/kernel": (registry.HEAD, "kernel"), "head/bias": (registry.HEAD, "bias"),
    }
    if key in simple:
        return [(("params",) + simple[key], w)]
    m = re.fullmatch(r"Transformer/encoderblock_(\d+)/(.+)/(kernel|bias|scale)", key)
    if m and m.group(2) in _GOOGLE_BLOCK_MODULES:
        return [(("params", f"encoder{m.group(1)}") + _GOOGLE_BLOCK_MODULES[m.group(2)]
                 + (m.group(3),), w)]
    return None


def _prepare_google(tensors: Mapping[str, Any], path: str) -> Tuple[Dict[str, Any], List[str]]:
    """A Google ViT / AugReg npz: the model's tensors, under their optional prefix."""
    prefix = next((p for p in ("", "opt/target/", "params/") if f"{p}embedding/kernel" in tensors),
                  None)
    if prefix is None:
        raise ValueError(f"{path!r}: no 'embedding/kernel' (nor under 'opt/target/' or "
                         "'params/'); not a Google ViT/AugReg checkpoint or a fer_jax file")
    rest, skipped = {}, []
    for key, value in tensors.items():
        if not key.startswith(prefix):
            skipped.append(f"{key} (outside the model's '{prefix}' prefix, e.g. optimizer state)")
        elif key[len(prefix):].startswith("pre_logits/"):
            # The tanh representation layer of the original in21k ViTs; timm drops it too.
            skipped.append(f"{key} (pre-logits layer, dropped with the head as timm does)")
        else:
            rest[key[len(prefix):]] = value
    return rest, skipped


def _settings_from_params(model_config: Any, params: Mapping[str, Any],
                          constructor: Callable[..., ViT]) -> None:
    if "pos_embed" in params:
        grid = int(round((params["pos_embed"].shape[1] - 1) ** 0.5))
        # Every ViT backbone's constructor is a functools.partial of ViT (VIT_MODELS).
        assert isinstance(constructor, functools.partial)
        model_config.vit_pos_size = grid * constructor.keywords["patch_size"]


def _timm_model(config: Any, num_classes: int) -> Tuple[Any, Dict[str, Any]]:
    """timm's ViT/DeiT at the config's size and head; blocks by fer_jax name."""
    import timm
    name = config.model.name
    if not name.endswith(("16", "32")):
        raise ValueError(f"--reference=pytorch: config.model.name={name!r} has no timm "
                         "counterpart here (vit_*/deit_* patch16 or 32)")
    model = timm.create_model(f"{name}_224", num_classes=num_classes,
                              img_size=config.dataset.image_size,
                              global_pool="avg" if config.model.vit_head == "gap" else "token")
    # torch's stubs type a submodule attribute as Tensor | Module: a false positive.
    return model, {f"block{i}": b for i, b in enumerate(model.blocks)}  # type: ignore[arg-type]


FAMILY = registry.register_family(registry.Family(
    name="vit", title="ViT", long_title="ViT/DeiT", build=_build, head_key="model.vit_head",
    heads=_HEADS,
    formats=(
        # timm's checkpoint_filter_fn resamples pos_embed bicubic with antialias.
        registry.WeightFormat(".safetensors", "timm state dict", registry.prepare_timm,
                              _timm_vit, "bicubic"),
        # timm's _load_weights resamples npz position embeddings bilinear without antialias.
        registry.WeightFormat(".npz", "Google ViT/AugReg checkpoint", _prepare_google,
                              _google_vit, "bilinear")),
    settings_from_params=_settings_from_params, timm_model=_timm_model,
    prefixes=("vit_", "deit_")))
for _name in _VARIANTS:
    registry.register_backbone(_name, FAMILY, VIT_MODELS[_name])
