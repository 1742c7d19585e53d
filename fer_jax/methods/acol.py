"""ACoL (Zhang et al. 2018): two classifiers; the second sees the features erased where the
first one's normalised map of the class is >= a threshold. ResNet head; built-in map "acol"."""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax import maps
from fer_jax.fields import Field, number, one_of
from fer_jax.methods import base


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
    label (`erase_by="label"`, as ACoL) or A's prediction (`"prediction"`), and branch
    B's logits are sown into AUX_LOGITS (the step adds their cross-entropy, as ACoL's
    loss); in evaluation the class is A's prediction.
    `hidden`: channels of the branches' 3x3 convolutions (1024 in ACoL and the reference).
    """
    num_classes: int
    hidden: int = 1024
    threshold: float = 0.1
    erase_by: str = "label"
    dtype: Any = jnp.float32

    def setup(self):
        self.branch_a = _AcolClassifier(self.num_classes, self.hidden, self.dtype)
        self.branch_b = _AcolClassifier(self.num_classes, self.hidden, self.dtype)

    def _erased(self, x: jnp.ndarray, maps_a: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        # The mask is a step function of A's map: no gradient flows through it (as ACoL).
        attention = jax.lax.stop_gradient(maps.min_max(base.pick(maps_a, classes)))
        keep = (attention < self.threshold).astype(x.dtype)
        return x * keep[..., None]

    def __call__(self, x: jnp.ndarray, train: bool = False,
                 labels: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        maps_a = self.branch_a(x)
        logits = jnp.mean(maps_a, axis=(1, 2))
        classes = jnp.argmax(logits, axis=-1)
        if train and labels is not None and self.erase_by == "label":
            classes = labels
        # Computed in evaluation too, so that init creates branch B (jit drops it there).
        logits_b = jnp.mean(self.branch_b(self._erased(x, maps_a, classes)), axis=(1, 2))
        if train:
            self.sow(base.AUX_LOGITS, "acol_b", logits_b)
        return logits

    def class_maps(self, x: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        """max(min-max(A_k), min-max(B_k)), B on the features erased by A_k: (B, h, w)."""
        maps_a = self.branch_a(x)
        maps_b = self.branch_b(self._erased(x, maps_a, classes))
        return jnp.maximum(maps.min_max(base.pick(maps_a, classes)),
                           maps.min_max(base.pick(maps_b, classes)))


base.register(base.Method(
    name="acol", summary="Zhang et al. 2018: a second classifier on the features erased by "
    "the first one's map",
    switch=("model.head", "acol"), families=frozenset({"resnet"}),
    options=(
        base.Option("model.acol_threshold", Field(
            0.1, "ACoL: erase where the first branch's [0, 1] map is >= this.", number(0, 1))),
        # Erasing by the label tells branch B the label (docs/method.md measures it).
        base.Option("model.acol_erase_by", Field(
            "label", "ACoL: in training, erase by the map of the label (ACoL) or of the "
            "first branch's prediction.", one_of("label", "prediction"))),
    ),
    head=lambda num_classes, options, hidden, dtype, name: AcolHead(
        num_classes, hidden, options.acol_threshold, options.acol_erase_by, dtype, name=name),
    cam_method="acol", paper_configs=base.paper_configs("acol", "rafdb", "affectnet")))
