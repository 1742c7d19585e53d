"""Every axis a plug-in: a training-time method or a backbone defined outside fer_jax
registers itself and the rest follows from the registries; bad names fail naming the
valid ones; the package's import graph has no cycle.
"""
import ast
import os
from typing import Any, Dict, List, Optional, Set

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_training_time as training_time
from configs import recipes
from fer_jax import cams, config_schema, grids, methods, models
from fer_jax.errors import ConfigError
from fer_jax.fields import Field, number
from fer_jax.models import registry as backbones

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- a toy training-time method, defined here and nowhere else -----------------------------

class ToyHead(nn.Module):
    """A 1x1 conv to K class maps; the logits are their means times `scale`."""
    num_classes: int
    scale: float = 1.0
    dtype: Any = jnp.float32

    def setup(self):
        self.conv = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)

    def __call__(self, x, train: bool = False, labels: Optional[jnp.ndarray] = None):
        return self.scale * jnp.mean(self.conv(x).astype(jnp.float32), axis=(1, 2))

    def class_maps(self, x, classes):
        return methods.base.pick(self.conv(x).astype(jnp.float32), classes)


@pytest.fixture
def toy_method():
    """The toy method and its built-in CAM, registered for one test (the registries are
    process-wide: other tests must see the shipped methods only)."""
    method = methods.register(methods.Method(
        name="toy", summary="a 1x1-conv class map, averaged", switch=("model.head", "toy"),
        families=frozenset({"resnet"}),
        options=(methods.Option("model.toy_scale", Field(
            1.0, "Toy: factor of the logits.", number(0, lo_open=True))),),
        head=lambda num_classes, options, hidden, dtype, name: ToyHead(
            num_classes, options.toy_scale, dtype, name=name),
        cam_method="toy"))
    cams.base.register(cams.builtin.head_map_method("toy", "the toy head's class map"))
    yield method
    del methods.REGISTRY["toy"], cams.REGISTRY["toy"]


def test_a_method_registered_outside_fer_jax_trains_and_evaluate_scores_its_map(
        toy_method, tiny_data_dir, monkeypatch):
    # The very test every shipped method passes (recipes.with_method, validate, create_model,
    # two train steps, evaluate of its built-in map), for the toy.
    monkeypatch.setitem(training_time.VARIANTS, "toy", (False, "float32"))
    training_time.test_method_trains_and_evaluate_scores_its_built_in_map("toy", tiny_data_dir)


def test_a_registered_method_gets_its_config_fields_choices_and_checks(toy_method):
    c = config_schema.defaults()
    assert c.model.toy_scale == 1.0 and "model.toy_scale = 1.0  # Toy" in config_schema.describe()
    recipes.with_method(c, "toy")
    config_schema.validate(c)
    c.model.toy_scale = 0.0
    with pytest.raises(ConfigError, match=r"config\.model\.toy_scale=0\.0 must be in \(0"):
        config_schema.validate(c)
    c.model.toy_scale = 2.0
    c.model.name = "vit_micro_patch8"
    with pytest.raises(ConfigError, match=r"config\.model\.head='toy' is a ResNet head, but "
                                          r"config\.model\.name='vit_micro_patch8'"):
        config_schema.validate(c)
    c.model.name, c.model.head = "resnet18", "nope"
    with pytest.raises(ConfigError, match=r"model\.head='nope' must be one of "
                                          r"\['gap', 'wildcat', 'acol', 'prm', 'toy'\]"):
        config_schema.validate(c)
    # Not a paper method: no paper grid row appears for it.
    assert "toy" not in methods.paper_methods() and "toy" not in recipes.TRAINING_TIME_METHODS


def test_a_method_option_reaches_its_head(toy_method):
    c = config_schema.defaults()
    c.model.width, c.model.head = 2, "toy"
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    logits = {}
    for scale in (1.0, 3.0):
        c.model.toy_scale = scale
        model = models.create_model(c.model, 4)
        assert cams.builtin_method(model) == "toy" and "toy" in cams.applicable(model)
        variables = model.init(jax.random.key(1), x)
        logits[scale] = np.asarray(model.apply(variables, x))
    np.testing.assert_allclose(logits[3.0], 3.0 * logits[1.0], rtol=1e-5, atol=1e-6)


# -- a toy backbone family ------------------------------------------------------------------

class TinyNet(nn.Module):
    """Two convolutions and a linear GAP head: the least a fer_jax backbone is."""
    num_classes: int
    width: int = 8
    dtype: Any = jnp.float32

    cam_layer = "features"
    cam_layer_nonnegative = True
    head_name = "head"
    gap_head = True

    @nn.compact
    def __call__(self, x, train: bool = False, labels: Optional[jnp.ndarray] = None):
        x = nn.relu(nn.Conv(self.width, (3, 3), (2, 2), dtype=self.dtype, name="conv")(x))
        x = _Features(self.width, self.dtype, name="features")(x)
        return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))


class _Features(nn.Module):
    width: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.width, (3, 3), dtype=self.dtype, name="conv")(x))


@pytest.fixture
def tiny_family():
    family = backbones.register_family(backbones.Family(
        name="tinynet", title="TinyNet", head_key="model.head", heads=("gap",),
        build=lambda constructor, model_config, num_classes, bn_axis_name, dtype: constructor(
            num_classes=num_classes, width=model_config.width, dtype=dtype)))
    backbones.register_backbone("tinynet8", family, TinyNet)
    yield family
    del backbones.BACKBONES["tinynet8"], backbones.FAMILIES["tinynet"]


def test_a_backbone_registered_outside_fer_jax_validates_builds_and_gets_cams(tiny_family):
    c = config_schema.defaults()
    c.model.name, c.model.width = "tinynet8", 4
    config_schema.validate(c)
    model = models.create_model(c.model, 3)
    assert isinstance(model, TinyNet) and "tinynet8" in models.MODELS
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    variables = model.init(jax.random.key(1), x)
    spec = cams.spec_for(model, ("cam", "gradcam"))
    maps = cams.explain(model, variables, x, jnp.array([0, 2]), spec).maps
    assert set(maps) == {"cam", "gradcam"} and maps["cam"].shape == (2, 16, 16)
    # The ResNet-only methods know it is no ResNet.
    c.model.adl = True
    with pytest.raises(ConfigError, match=r"config\.model\.adl=True inserts layers between "
                                          r"ResNet blocks, but config\.model\.name='tinynet8'"):
        config_schema.validate(c)


# -- unknown names ----------------------------------------------------------------------------

def test_an_unknown_method_fails_naming_it_and_the_registered_methods():
    with pytest.raises(ConfigError) as error:
        recipes.with_method(config_schema.defaults(), "gradcam")
    assert "unknown training-time method 'gradcam'" in str(error.value)
    assert f"valid methods: {sorted(methods.REGISTRY)}" in str(error.value)
    assert len(methods.REGISTRY) >= 6 and "gradcam" not in methods.REGISTRY
    with pytest.raises(ConfigError, match=r"'wildcat_typo'"):
        grids.builtin_map("wildcat_typo")


def test_an_unknown_backbone_fails_naming_it_and_the_registered_backbones():
    c = config_schema.defaults()
    c.model.name = "vgg16"
    with pytest.raises(ConfigError) as error:
        models.create_model(c.model, 7)
    assert f"config.model.name='vgg16' is unknown; valid names: {sorted(backbones.BACKBONES)}" \
        in str(error.value)
    with pytest.raises(ConfigError) as error:
        config_schema.validate(c)
    assert f"model.name='vgg16' must be one of {sorted(backbones.BACKBONES)}" in str(error.value)
    assert "resnet50" in backbones.BACKBONES and "deit_small_patch16" in backbones.BACKBONES


# -- the import graph -------------------------------------------------------------------------

PACKAGES = ("fer_jax", "configs", "data_prep")


def import_graph(root: str = ROOT, packages=PACKAGES) -> Dict[str, Set[str]]:
    """module -> the modules of `packages` it imports anywhere (functions included).

    `from a import b` counts as importing a.b when that is a module, else a;
    a package is its __init__.py.
    """
    files = {}
    for package in packages:
        for folder, _, names in os.walk(os.path.join(root, package)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    parts = os.path.relpath(path, root)[:-3].split(os.sep)
                    files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in files.items():
        is_package = path.endswith("__init__.py")
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:   # relative: from the module's own package upwards
                    here = module.split(".") if is_package else module.split(".")[:-1]
                    here = here[:len(here) - node.level + 1]
                    base = ".".join(here + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in files and t != module)
        graph[module] = edges
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle of `graph` as [a, b, ..., a], or [] when there is none."""
    state: Dict[str, int] = {}   # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 2
        path.pop()
        return []
    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    # Lazy imports count: config_schema reads the CAM registry inside a check.
    assert "fer_jax.cams" in graph["fer_jax.config_schema"]
    assert "fer_jax.errors" in graph["fer_jax.cams.base"]
    assert find_cycle(graph) == []


# The layers of the code, top to bottom (README, "Layout"): a module may import its own
# layer and the ones below it, never one above, even lazily. data_prep is the offline
# stage, below everything: fer_jax calls it, it never calls fer_jax.
LAYERS = (
    ("configs",),
    ("fer_jax.serve",),                                                    # serves predict
    ("fer_jax.main", "fer_jax.experiments", "fer_jax.tables", "fer_jax.grids",
     "fer_jax.predict", "fer_jax.benchmark", "fer_jax.cam_benchmark",
     "fer_jax.predict_benchmark", "fer_jax.input_benchmark", "fer_jax.convert_weights",
     "fer_jax.export", "fer_jax.audit", "fer_jax.fer_reference"),          # entry points
    ("fer_jax.train", "fer_jax.evaluate", "fer_jax.runs"),                # one run
    ("fer_jax.cli", "fer_jax.config_schema", "fer_jax.input_pipeline", "fer_jax.checkpoints",
     "fer_jax.summaries",
     "fer_jax.data_parallel", "fer_jax.optim", "fer_jax.preemption", "fer_jax.report",
     "fer_jax.plots", "fer_jax.video", "fer_jax.weights"),                # what a run uses
    ("fer_jax.cams", "fer_jax.metrics"),
    ("fer_jax.capture", "fer_jax.alignment"),
    ("fer_jax.models", "fer_jax.methods"),                                 # the registries
    ("fer_jax.maps", "fer_jax.cutmix"),                                    # pure functions
    ("fer_jax.augment", "fer_jax.datasets", "fer_jax.records"),            # examples, no TF
    ("fer_jax.errors", "fer_jax.fields", "fer_jax.pretrained", "fer_jax.serving", "fer_jax"),
    ("data_prep",),
)


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix of `module` that LAYERS names."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        for i, layer in enumerate(LAYERS):
            if name in layer:
                return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if layer_of(b) < layer_of(a))


def test_layer_check_finds_an_upward_import():
    assert upward_imports({"fer_jax.maps": {"fer_jax.cams.base"}, "fer_jax.cams.base": set()}) \
        == ["fer_jax.maps -> fer_jax.cams.base"]
    assert upward_imports({"data_prep.build": {"fer_jax.errors"}, "fer_jax.errors": set()}) \
        == ["data_prep.build -> fer_jax.errors"]


def test_imports_only_go_down_the_layers():
    """Every module sits in a layer (a new one must be placed), and no import goes up."""
    graph = import_graph()
    assert upward_imports(graph) == []


DEFINES_FLAGS_ON_IMPORT = {"fer_jax.main"}   # flax's examples' style: the program's module


def test_importing_a_module_defines_no_command_line_flags():
    """A tool's absl flags are defined when it runs as a program, not when it is imported:
    otherwise two tools imported into one process (a test worker, a notebook) clash
    ("flag 'config' is defined twice"), depending on which was imported first."""
    import subprocess
    import sys
    modules = sorted(m for m in import_graph() if m.startswith("fer_jax")
                     and m not in DEFINES_FLAGS_ON_IMPORT)
    # absl files each flag under the module that defined it (libraries define their own).
    script = ("import importlib, sys\nfrom absl import flags\n"
              "for m in sys.argv[1:]:\n    importlib.import_module(m)\n"
              "print(sorted((m, sorted(f.name for f in fs)) for m, fs in "
              "flags.FLAGS.flags_by_module_dict().items() if m.startswith('fer_jax')))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script, *modules], cwd=root, text=True,
                         capture_output=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=root))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
