"""Training-time CAM methods: heads and a layer that build a localisation map into the model.

The paper compares, with and without AU alignment, methods from weakly supervised
object localisation whose CAM comes from the architecture or from training
(docs/method.md, "Training-time methods"):
- `WildcatHead` (Durand et al. 2017): per class, `modalities` 1x1-conv maps averaged
  into a class map; the logit pools the map's highest and lowest positions.
- `AcolHead` (Zhang et al. 2018): two classifiers; the second sees the features
  erased where the first one's normalised map of the class is >= a threshold.
- `PrmHead` (Zhou et al. 2018): a 1x1-conv class map, peak stimulation by 3x3
  stride-1 max pooling, then the global average.
- `TsCamHead` (Gao et al. 2021): a 3x3 conv over a ViT's patch grid gives semantic
  class maps, averaged into the logits (the class-token attention that TS-CAM
  multiplies them with is read by fer_jax.cams.builtin).
- `ADL` (Choe & Shim 2019): attention-based dropout between ResNet blocks, training only.

Every head maps the backbone's (B, h, w, C) features to (B, K) float32 logits and
gives, through `class_maps(features, classes)`, its built-in map (B, h, w) of any
class; fer_jax.cams.builtin registers those maps as CAM methods. Heads take the
class labels in training (`labels`), which only ACoL uses, and sow extra logits
that the train step adds a cross-entropy for into the "aux_logits" collection.
"""
import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax import maps
from fer_jax.config_schema import ConfigError

AUX_LOGITS = "aux_logits"   # collection of extra (B, K) logits that also get a cross-entropy
HEADS = ("wildcat", "acol", "prm", "tscam")   # heads with a built-in class map


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings of the training-time methods (defaults: the paper's reference code).

    modalities, kmax, kmin, alpha: WILDCAT (kmax, kmin: fractions of the h*w
    positions); acol_threshold: ACoL's erasing threshold on the [0, 1] map;
    adl_drop_rate: probability that an ADL layer applies its drop mask rather
    than its importance map; adl_threshold: ADL drops positions whose channel
    mean is >= this fraction of the maximum.
    """
    modalities: int = 5
    kmax: float = 0.5
    kmin: float = 0.1
    alpha: float = 0.6
    acol_threshold: float = 0.1
    adl_drop_rate: float = 0.4
    adl_threshold: float = 0.1


def _pick(class_maps: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
    """(B, h, w, K) maps, (B,) classes -> (B, h, w) the map of each sample's class."""
    return jnp.take_along_axis(class_maps, classes.astype(jnp.int32)[:, None, None, None],
                               axis=-1)[..., 0]


def _count(fraction: float, n: int) -> int:
    """`fraction` of n positions, rounded as Python rounds (the reference code's rule)."""
    return min(n, int(round(fraction * n)))


def wildcat_pool(class_maps: jnp.ndarray, kmax: float, kmin: float, alpha: float) -> jnp.ndarray:
    """WILDCAT's spatial pooling: (B, h, w, K) -> (B, K) float32.

    s = (mean of the top kmax*n values + alpha * mean of the bottom kmin*n) / 2 over
    the n = h*w positions of each class map; with kmin = 0 or alpha = 0 the score
    is the top mean alone (the original code's branch, no halving).
    """
    b, h, w, k = class_maps.shape
    n = h * w
    n_max, n_min = max(1, _count(kmax, n)), _count(kmin, n)
    ordered = jnp.sort(class_maps.astype(jnp.float32).reshape(b, n, k), axis=1)  # ascending
    score = jnp.mean(ordered[:, n - n_max:], axis=1)
    if n_min > 0 and alpha != 0.0:
        score = (score + alpha * jnp.mean(ordered[:, :n_min], axis=1)) / 2.0
    return score


class WildcatHead(nn.Module):
    """WILDCAT: 1x1 conv to K * modalities maps, class maps = mean over modalities, WILDCAT pool.

    (B, h, w, C) -> logits (B, K) float32; class maps (B, h, w, K).
    """
    num_classes: int
    options: Options = Options()
    dtype: Any = jnp.float32

    def setup(self):
        self.conv = nn.Conv(self.num_classes * self.options.modalities, (1, 1), dtype=self.dtype)

    def all_maps(self, x: jnp.ndarray) -> jnp.ndarray:
        b, h, w, _ = x.shape
        # Channels are class-major (class c owns channels c*M .. c*M + M-1), as WILDCAT's code.
        out = self.conv(x).astype(jnp.float32).reshape(b, h, w, self.num_classes, -1)
        return jnp.mean(out, axis=-1)

    def __call__(self, x: jnp.ndarray, train: bool = False,
                 labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        o = self.options
        return wildcat_pool(self.all_maps(x), o.kmax, o.kmin, o.alpha)

    def class_maps(self, x: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        """The class map of `classes` (B,): (B, h, w) float32."""
        return _pick(self.all_maps(x), classes)


class _AcolClassifier(nn.Module):
    """ACoL's classifier branch: 3x3 conv, ReLU, 3x3 conv, ReLU, 1x1 conv to K class maps."""
    num_classes: int
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.relu(nn.Conv(self.hidden, (3, 3), padding=1, dtype=self.dtype, name="conv1")(x))
        x = nn.relu(nn.Conv(self.hidden, (3, 3), padding=1, dtype=self.dtype, name="conv2")(x))
        return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="conv3")(x).astype(
            jnp.float32)


class AcolHead(nn.Module):
    """ACoL: branch A on the features, branch B on them erased by A's map of the class.

    (B, h, w, C) -> logits of branch A (B, K) float32. In training the class is the
    label and branch B's logits are sown into AUX_LOGITS (the step adds their
    cross-entropy, as ACoL's loss); in evaluation the class is A's prediction.
    `hidden`: channels of the branches' 3x3 convolutions (1024 in ACoL and the reference).
    """
    num_classes: int
    hidden: int = 1024
    threshold: float = 0.1
    dtype: Any = jnp.float32

    def setup(self):
        self.branch_a = _AcolClassifier(self.num_classes, self.hidden, self.dtype)
        self.branch_b = _AcolClassifier(self.num_classes, self.hidden, self.dtype)

    def _erased(self, x: jnp.ndarray, maps_a: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        # The mask is a step function of A's map: no gradient flows through it (as ACoL).
        attention = jax.lax.stop_gradient(maps.min_max(_pick(maps_a, classes)))
        keep = (attention < self.threshold).astype(x.dtype)
        return x * keep[..., None]

    def __call__(self, x: jnp.ndarray, train: bool = False,
                 labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        maps_a = self.branch_a(x)
        logits = jnp.mean(maps_a, axis=(1, 2))
        classes = labels if (train and labels is not None) else jnp.argmax(logits, axis=-1)
        # Computed in evaluation too, so that init creates branch B (jit drops it there).
        logits_b = jnp.mean(self.branch_b(self._erased(x, maps_a, classes)), axis=(1, 2))
        if train:
            self.sow(AUX_LOGITS, "acol_b", logits_b)
        return logits

    def class_maps(self, x: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        """max(min-max(A_k), min-max(B_k)), B on the features erased by A_k: (B, h, w)."""
        maps_a = self.branch_a(x)
        maps_b = self.branch_b(self._erased(x, maps_a, classes))
        return jnp.maximum(maps.min_max(_pick(maps_a, classes)),
                           maps.min_max(_pick(maps_b, classes)))


class PrmHead(nn.Module):
    """PRM: 1x1 conv to K class response maps, 3x3 stride-1 max pooling (no padding), GAP.

    (B, h, w, C) with h, w >= 3 -> logits (B, K) float32.
    """
    num_classes: int
    window: int = 3
    dtype: Any = jnp.float32

    def setup(self):
        self.conv = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)

    def __call__(self, x: jnp.ndarray, train: bool = False,
                 labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        if min(x.shape[1:3]) < self.window:
            raise ConfigError(
                f"config.model.head='prm': its {self.window}x{self.window} peak stimulation needs "
                f"a cam layer of at least that size, got {x.shape[1]}x{x.shape[2]}; raise "
                "config.dataset.image_size or set config.model.large_maps=True")
        response = self.conv(x).astype(jnp.float32)
        peaks = nn.max_pool(response, (self.window, self.window), strides=(1, 1),
                            padding="VALID")
        return jnp.mean(peaks, axis=(1, 2))

    def class_maps(self, x: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        """The class response map of `classes` (B,): (B, h, w) float32."""
        return _pick(self.conv(x).astype(jnp.float32), classes)


class TsCamHead(nn.Module):
    """TS-CAM's head: 3x3 conv (padding 1) from the patch grid to K semantic maps, GAP.

    (B, h, w, D) normed patch tokens -> logits (B, K) float32.
    """
    num_classes: int
    dtype: Any = jnp.float32

    def setup(self):
        self.conv = nn.Conv(self.num_classes, (3, 3), padding=1, dtype=self.dtype)

    def __call__(self, x: jnp.ndarray, train: bool = False,
                 labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        return jnp.mean(self.conv(x).astype(jnp.float32), axis=(1, 2))

    def class_maps(self, x: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        """The semantic map of `classes` (B,): (B, h, w) float32 (before the attention product)."""
        return _pick(self.conv(x).astype(jnp.float32), classes)


def make_head(kind: str, num_classes: int, options: Options = Options(), hidden: int = 1024,
              dtype: Any = jnp.float32, name: Optional[str] = None) -> nn.Module:
    """The head called `kind` (one of HEADS). Inside a model's compact method it becomes
    that model's submodule `name`; outside, a top-level module to apply with head params."""
    if kind == "wildcat":
        return WildcatHead(num_classes, options, dtype, name=name)
    if kind == "acol":
        return AcolHead(num_classes, hidden, options.acol_threshold, dtype, name=name)
    if kind == "prm":
        return PrmHead(num_classes, dtype=dtype, name=name)
    if kind == "tscam":
        return TsCamHead(num_classes, dtype, name=name)
    raise ValueError(f"head {kind!r} has no built-in map; heads with one: {list(HEADS)}")


class ADL(nn.Module):
    """Attention-based dropout (training only; identity in evaluation). (B, h, w, C) -> same.

    attention = channel mean; with probability `drop_rate` (one draw per call, rng
    "dropout") the features are multiplied by the drop mask [attention < threshold *
    max_hw attention], else by the importance map sigmoid(attention).
    """
    drop_rate: float = 0.4
    threshold: float = 0.1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if not train:
            return x
        attention = jnp.mean(x.astype(jnp.float32), axis=-1, keepdims=True)
        peak = jnp.max(attention, axis=(1, 2), keepdims=True)
        drop_mask = (attention < self.threshold * peak).astype(jnp.float32)
        use_drop = jax.random.uniform(self.make_rng("dropout")) < self.drop_rate
        selected = jnp.where(use_drop, drop_mask, jax.nn.sigmoid(attention))
        return x * selected.astype(x.dtype)
