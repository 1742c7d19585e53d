"""Configs: every field has a default and a check; bad keys and values fail early by name."""
import os
import subprocess
import sys

import pytest

from fer_jax import config_schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _config_files():
    folder = os.path.join(ROOT, "configs")
    return sorted(f for f in os.listdir(folder) if f.endswith(".py")
                  and "def get_config" in open(os.path.join(folder, f)).read())


def test_config_files_are_found():
    assert {"default.py", "rafdb_resnet50.py", "affectnet_vit_base.py"} <= set(_config_files())


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
    assert out.returncode != 0
    assert "wieght" in out.stderr
    assert not os.listdir(tmp_path)  # failed before writing anything
