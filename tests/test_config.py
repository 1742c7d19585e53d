"""Configs: every field has a default and a check; bad keys and values fail early by name."""
import os
import subprocess
import sys

import pytest

from fer_jax import config_schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    """get_config() of configs/NAME (NAME may be in a subfolder: "paper/rafdb_acol.py")."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name[:-3].replace("/", "."),
                                                  os.path.join(ROOT, "configs", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _config_files():
    """Every file under configs/ (subfolders too) that defines get_config, relative to it."""
    top = os.path.join(ROOT, "configs")
    found = []
    for folder, _, files in os.walk(top):
        for f in files:
            path = os.path.join(folder, f)
            if f.endswith(".py") and "def get_config" in open(path).read():
                found.append(os.path.relpath(path, top).replace(os.sep, "/"))
    return sorted(found)


def _modules_with_get_config():
    """Independently of _config_files: every module under configs/ imported, kept when it
    has a callable get_config (so helpers such as recipes.py and the __init__s are not)."""
    import importlib
    import pathlib
    top = pathlib.Path(ROOT, "configs")
    kept = []
    for path in sorted(top.rglob("*.py")):
        rel = path.relative_to(top).as_posix()
        module = importlib.import_module("configs." + rel[:-3].replace("/", "."))
        if callable(getattr(module, "get_config", None)):
            kept.append(rel)
    return kept


def test_config_discovery_finds_every_config_file_and_no_helper():
    """The parametrisation of test_every_shipped_config_validates: exactly the modules
    with a get_config, subfolders included; every config that the grids, the README or
    the docs name among them."""
    import re
    from fer_jax import grids
    found = _config_files()
    assert found == _modules_with_get_config()
    assert "recipes.py" not in found and "paper/rafdb_tscam.py" in found
    named = {c.config.partition(":")[0] for g in grids.GRIDS.values() for c in g.cells}
    for doc in ["README.md"] + [os.path.join("docs", f) for f in os.listdir(
            os.path.join(ROOT, "docs")) if f.endswith(".md")]:
        text = open(os.path.join(ROOT, doc)).read()
        named |= set(re.findall(r"--config=(configs/[\w/]+\.py)", text))
    assert named and {n[len("configs/"):] for n in named} <= set(found)


def _changed(config, base):
    """{(group, key): value} of the fields where `config` differs from `base`."""
    return {(g, k): config[g][k] for g in base.keys() if hasattr(base[g], "keys")
            for k in base[g].keys() if config[g][k] != base[g][k]}


@pytest.mark.parametrize("dataset", ["rafdb", "affectnet"])
def test_paper_method_configs_are_their_row_plus_the_method_flag(dataset):
    """Table 1's method rows: the dataset's CAM row with one method switched on."""
    base = load(f"{dataset}_resnet50.py")
    expected = {"wildcat": {("model", "head"): "wildcat"}, "acol": {("model", "head"): "acol"},
                "prm": {("model", "head"): "prm"}, "adl": {("model", "adl"): True},
                "cutmix": {("train", "cutmix_prob"): 1.0}}
    for method, change in expected.items():
        assert _changed(load(f"paper/{dataset}_{method}.py"), base) == change, method


def test_paper_ts_cam_config_is_the_deit_row_with_the_ts_cam_head():
    assert _changed(load("paper/rafdb_tscam.py"), load("rafdb_deit_small.py")) == {
        ("model", "vit_head"): "tscam"}


@pytest.mark.parametrize("name", _config_files())
def test_every_shipped_config_validates(name):
    config_schema.validate(load(name))


def test_every_field_has_a_comment_and_a_default_that_passes_its_check():
    def walk(schema, prefix=""):
        for key, spec in schema.items():
            if isinstance(spec, dict):
                yield from walk(spec, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", spec
    fields = list(walk(config_schema.SCHEMA))
    assert len(fields) > 30
    for name, spec in fields:
        assert spec.doc.strip(), name
        assert spec.check(spec.default) is None, name


def test_unknown_key_is_named_with_the_valid_keys():
    c = config_schema.defaults()
    c.align.unlocked_extra = 1  # ConfigDict allows new keys unless locked
    with pytest.raises(ValueError, match=r"unknown config key align\.unlocked_extra.*"
                                         r"\['layers', 'weight'\]"):
        config_schema.validate(c)


@pytest.mark.parametrize("key,value,message", [
    ("optim.name", "rmsprop", r"optim\.name='rmsprop' must be one of \['sgd', 'adamw'\]"),
    ("model.name", "vgg", r"model\.name='vgg' must be one of"),
    ("dataset.name", "mnist/1", r"unknown dataset 'mnist'"),
    ("align.weight", -1.0, r"align\.weight=-1\.0 must be in"),
    ("align.layers", (), r"align\.layers=\(\) must be a non-empty tuple of strings"),
    ("train.batch_size", 12, r"divisible by the number of devices \(8\)"),
    ("eval.cam_methods", ("gradcam", "grad_cam"),
     r"eval\.cam_methods=\('gradcam', 'grad_cam'\) names an unknown CAM method 'grad_cam'; "
     r"valid: \[.*'gradcam\+\+'"),
    ("eval.cam_layers", ("stage4", 3), r"eval\.cam_layers=\('stage4', 3\) must be a tuple of "
                                      r"strings"),
])
def test_bad_value_is_named_with_what_is_allowed(key, value, message):
    c = config_schema.defaults()
    group, field = key.split(".")
    c[group][field] = value
    with pytest.raises(ValueError, match=message):
        config_schema.validate(c)


@pytest.mark.parametrize("changes,message", [
    ({"model.name": "deit_small_patch16", "model.head": "wildcat"},
     r"config\.model\.head='wildcat' is a ResNet head, but config\.model\.name="
     r"'deit_small_patch16'; ViT heads are set by config\.model\.vit_head"),
    ({"model.name": "vit_micro_patch8", "model.adl": True},
     r"config\.model\.adl=True inserts layers between ResNet blocks, but config\.model\.name="),
    ({"model.vit_head": "tscam"},
     r"config\.model\.vit_head='tscam' is a ViT/DeiT head, but config\.model\.name='resnet18'"),
    ({"model.head": "gradcam"}, r"config\.model\.head='gradcam' must be one of \['gap', "
                                r"'wildcat', 'acol', 'prm'\]"),
    ({"train.cutmix_beta": 0.0}, r"config\.train\.cutmix_beta=0\.0 must be in \(0"),
])
def test_training_time_methods_outside_their_model_family_name_the_keys(changes, message):
    c = config_schema.defaults()
    for key, value in changes.items():
        group, field = key.split(".")
        c[group][field] = value
    with pytest.raises(config_schema.ConfigError, match=message):
        config_schema.validate(c)


def test_bad_value_on_the_command_line_ends_with_one_line_not_a_traceback(tmp_path):
    cmd = [sys.executable, "-m", "fer_jax.main", "--config=configs/default.py",
           f"--workdir={tmp_path}", "--config.optim.name=rmsprop"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        "error: config.optim.name='rmsprop' must be one of ['sgd', 'adamw']")
    assert not os.listdir(tmp_path)


def test_command_line_override_of_unknown_key_fails_naming_it(tmp_path):
    cmd = [sys.executable, "-m", "fer_jax.main", "--config=configs/default.py",
           f"--workdir={tmp_path}", "--config.align.wieght=0"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "error: --config.align.wieght: unknown key 'wieght' in align; valid: ['layers', "
        "'weight']")
    assert not os.listdir(tmp_path)  # failed before writing anything


def test_a_dotted_key_is_looked_up_once_for_every_tool():
    """config_schema.field_at: the Field of "group.key" (parse-time flags and predict's
    checks both use it); an unknown part is named with where it was looked for and the
    valid keys there; a group is not a field."""
    assert config_schema.field_at("align.weight").default == config_schema.defaults().align.weight
    with pytest.raises(config_schema.ConfigError,
                       match=r"^unknown key 'wieght' in align; valid: \['layers', 'weight'\]$"):
        config_schema.field_at("align.wieght")
    with pytest.raises(config_schema.ConfigError, match=r"^unknown key 'algn' in the top level"):
        config_schema.field_at("algn.weight")
    with pytest.raises(config_schema.ConfigError, match=r"unknown key 'x' in align.weight; valid: \[\]"):
        config_schema.field_at("align.weight.x")
    with pytest.raises(config_schema.ConfigError, match=r"^align is a group, not a field"):
        config_schema.field_at("align")
    config_schema.check_values({"model.dtype": "bfloat16", "align.weight": 2.0})
    with pytest.raises(config_schema.ConfigError, match=r"^config.model.dtype='float8' "):
        config_schema.check_values({"model.dtype": "float8"})
    with pytest.raises(config_schema.ConfigError, match=r"^config.model.dtyp: unknown key"):
        config_schema.check_values({"model.dtyp": "bfloat16"})
