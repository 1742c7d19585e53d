"""The paper's AffectNet row: ResNet-50 + AU alignment with lambda = 9.

  python -m fer_jax.main --config=configs/affectnet_resnet50.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=resnet50.safetensors
"""
import importlib.util
import os


def _rafdb_config():
    """The RAF-DB recipe, loaded by path so this file works from any directory."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rafdb_resnet50.py")
    spec = importlib.util.spec_from_file_location("rafdb_resnet50", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    c = _rafdb_config()
    c.dataset.name = "affectnet"       # 7 classes (affectnet/8 adds Contempt)
    c.dataset.eval_split = "test"      # the official validation set (500 per class)
    c.align.weight = 9.0               # the authors' default on AffectNet
    c.train.checkpoint_every_steps = 2000
    return c
