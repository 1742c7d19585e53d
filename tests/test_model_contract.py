"""The model contract (fer_jax.models.contract): every registered backbone, with each
training-time method that applies to it, implements ExplainableModel with the declared
types (and its heads TrainingHead); its layers are what it says they are; `describe`
gives a plain linen module the ModelView defaults; and no module reads the contract off
a model with getattr except that adapter.
"""
import ast
import dataclasses
import os
import typing
from typing import Any, Iterator, List, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import capture, config_schema, methods, models
from fer_jax.models import contract, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_variants() -> Iterator[Tuple[str, str, str]]:
    """(backbone, config key, value): each registered backbone with each of its family's
    own heads and each training-time method that applies to its family."""
    for name, backbone in registry.BACKBONES.items():
        family = backbone.family
        for head in family.heads:
            yield name, family.head_key, head
        for method in methods.REGISTRY.values():
            if not method.families or family.name in method.families:
                yield name, method.switch[0], method.switch[1]


def build(name: str, key: str, value: Any, size: int = 32) -> Any:
    c = config_schema.defaults()
    c.model.name, c.model.width, c.model.vit_pos_size = name, 4, size
    family = registry.get(name).family
    if family.head_key:   # the family's own first head (APViT has no "gap")
        head_group, head_leaf = family.head_key.split(".")
        c[head_group][head_leaf] = family.heads[0]
    group, leaf = key.split(".")
    c[group][leaf] = value
    return models.create_model(c.model, 5)


def conforms(value: Any, hint: Any) -> bool:
    """isinstance for the contract's annotations (str, int, bool, Optional, Tuple[X, ...])."""
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is Union:
        return any(conforms(value, a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(conforms(v, item) for v in value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def contract_properties() -> List[Tuple[str, Any]]:
    """(name, declared type) of every data member of ExplainableModel."""
    return [(n, typing.get_type_hints(p.fget)["return"])
            for n, p in vars(contract.ExplainableModel).items() if isinstance(p, property)]


def test_conforms_tells_the_declared_types_apart():
    assert conforms(("a", "b"), Tuple[str, ...]) and not conforms(["a"], Tuple[str, ...])
    assert conforms(None, typing.Optional[int]) and not conforms(True, typing.Optional[int])
    assert not conforms(("a", 1), Tuple[str, ...]) and not conforms(1, bool)
    assert {n for n, _ in contract_properties()} >= {
        "cam_layer", "default_cam_layers", "head", "head_name", "gap_head",
        "attention_layers", "patch_size", "cam_layer_nonnegative", "num_classes"}


VARIANTS = list(model_variants())


def test_every_backbone_and_method_is_enumerated():
    assert ("resnet18", "model.head", "wildcat") in VARIANTS
    assert ("resnet50", "model.adl", True) in VARIANTS
    assert ("vit_micro_patch8", "model.vit_head", "tscam") in VARIANTS
    assert ("vit_micro_patch8", "model.vit_head", "token") in VARIANTS
    assert ("vit_micro_patch8", "model.head", "wildcat") not in VARIANTS
    assert len({v[0] for v in VARIANTS}) == len(registry.BACKBONES)


@pytest.mark.parametrize("name,key,value", VARIANTS)
def test_every_backbone_with_each_method_implements_the_contract(name, key, value):
    model = build(name, key, value)
    assert isinstance(model, contract.ExplainableModel)
    view = contract.describe(model)
    for member, hint in contract_properties():
        got = getattr(model, member)
        assert conforms(got, hint), f"{name} {key}={value}: {member}={got!r} is no {hint}"
        if member in {f.name for f in dataclasses.fields(view)}:
            # The view reads the model's own member, not a default.
            assert getattr(view, member) == got, member
    assert view.title == type(model).__name__
    method = methods.REGISTRY.get(model.head)
    if method is not None and method.head is not None:
        assert not model.gap_head
        assert isinstance(model.head_module(), contract.TrainingHead)
        assert isinstance(view.head_module(), contract.TrainingHead)


@pytest.mark.parametrize("name,head", [("resnet18", "wildcat"), ("vit_micro_patch8", "tscam"),
                                       ("vit_micro_patch8", "gap")])
def test_the_layers_a_model_names_are_its_layers(name, head):
    key = registry.get(name).family.head_key
    model = build(name, key, head)
    x = jnp.zeros((1, 32, 32, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    spatial = capture.spatial_layers(model, variables, (32, 32, 3))
    attention = capture.capturable_layers(model, variables, (32, 32, 3), capture.ATTENTION)
    assert model.cam_layer in spatial and set(model.default_cam_layers) <= set(spatial)
    assert list(model.attention_layers) == list(attention)   # every block's, in order
    h, w, channels = spatial[model.cam_layer][1:]
    if model.patch_size:
        assert (h, w) == (32 // model.patch_size, 32 // model.patch_size)
    head_params = variables["params"][model.head_name]
    if model.gap_head:
        assert head_params["kernel"].shape == (channels, 5)
    else:   # the head applies to the cam layer and maps each class there
        feats = jnp.zeros((2, h, w, channels))
        maps = jax.eval_shape(lambda p, f: model.head_module().apply(
            {"params": p}, f, jnp.array([0, 3]), method="class_maps"), head_params, feats)
        assert maps.shape == (2, h, w)


# -- the adapter's defaults ----------------------------------------------------------------

class PlainNet(nn.Module):
    """A linen classifier that knows nothing of fer_jax."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="dense")(jnp.mean(x, axis=(1, 2)))


class TrainFlagNet(nn.Module):
    """Another, whose output says whether it ran in training mode."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        return jnp.full((x.shape[0], 2), 1.0 if train else 0.0)


class CamLayerOnly(nn.Module):
    """A plug-in backbone that declares a cam layer and a GAP head, nothing more."""
    cam_layer = "features"
    gap_head = True
    head_name = "head"

    def __call__(self, x, train: bool = False):
        return x


def test_describe_gives_a_plain_module_the_view_defaults():
    module = PlainNet()
    view = contract.describe(module)
    assert not isinstance(module, contract.ExplainableModel) and view.title == "PlainNet"
    assert (view.cam_layer, view.default_cam_layers, view.head, view.head_name, view.head_module,
            view.gap_head, view.cam_layer_nonnegative, view.attention_layers, view.patch_size,
            view.cam_target, view.reshape_transform) == (
                None, (), None, None, None, False, False, (), None, None, None)
    x = jnp.ones((2, 4, 4, 3))
    variables = module.init(jax.random.key(0), x)
    np.testing.assert_array_equal(view.apply(variables, x), module.apply(variables, x))
    assert contract.describe(view) is view


def test_describe_runs_a_module_that_takes_train_in_eval_mode():
    x = jnp.ones((2, 4, 4, 3))
    view = contract.describe(TrainFlagNet())
    np.testing.assert_array_equal(view.apply({}, x), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="eval mode only"):
        view.apply({}, x, train=True)


def test_describe_fills_what_a_partial_model_lacks():
    view = contract.describe(CamLayerOnly())
    assert (view.cam_layer, view.default_cam_layers, view.gap_head, view.head_name) == (
        "features", ("features",), True, "head")
    assert (view.head, view.head_module, view.attention_layers, view.patch_size) == (
        None, None, (), None)


def test_layer_kind_reads_a_tap_and_defaults_to_features():
    class Tap(nn.Module):
        capture_kind = contract.ATTENTION
    assert contract.layer_kind(Tap()) == capture.ATTENTION == "attention"
    assert contract.layer_kind(PlainNet()) == capture.FEATURES == "features"


# -- no getattr on models outside the adapter ----------------------------------------------

ADAPTER = os.path.join("fer_jax", "models", "contract.py")
CONTRACT_NAMES = ({n for n in vars(contract.ExplainableModel) if not n.startswith("_")}
                  | {f.name for f in dataclasses.fields(contract.ModelView)} | {"capture_kind"})


def _last_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def model_getattrs(source: str, filename: str = "<source>") -> List[str]:
    """getattr / hasattr calls that read a model: on an object named like one (model,
    self.model, mdl) or of an attribute the contract names; as "file:line"."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and node.args):
            continue
        obj = _last_name(node.args[0]).lower()
        attr = node.args[1] if len(node.args) > 1 else None
        named = isinstance(attr, ast.Constant) and attr.value in CONTRACT_NAMES
        if "model" in obj or obj == "mdl" or named:
            found.append(f"{filename}:{node.lineno}")
    return found


def test_the_getattr_check_finds_reads_of_a_model():
    assert model_getattrs("getattr(model, 'x', 1)") == ["<source>:1"]
    assert model_getattrs("y = hasattr(self.model, 'z')") == ["<source>:1"]
    assert model_getattrs("getattr(thing, 'cam_layer', None)") == ["<source>:1"]
    assert model_getattrs("getattr(mdl, 'capture_kind', 'features')") == ["<source>:1"]
    assert model_getattrs("getattr(builder, 'workers', 1)\ngetattr(self, k)") == []


def test_no_module_reads_a_model_with_getattr_but_the_adapter():
    found = []
    for package in ("fer_jax", "data_prep"):
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in sorted(names):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)
                if name.endswith(".py") and rel != ADAPTER:
                    with open(path) as f:
                        found += model_getattrs(f.read(), rel)
    assert found == []
    with open(os.path.join(ROOT, ADAPTER)) as f:   # the adapter itself is what it checks
        assert len(model_getattrs(f.read(), ADAPTER)) >= 8
