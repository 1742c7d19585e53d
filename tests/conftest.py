"""Test session setup: 8 simulated CPU devices, so data-parallel code runs for real.

XLA reads the flag when jax is first imported, hence here, before any test module.
A JAX compilation cache for the session (this process, the xdist workers and the trainer
subprocesses the tests start, which inherit the environment): the same tiny programs,
above all the model initialisation (tens of seconds on 2 cores), compile once.
"""
import atexit
import os
import shutil
import tempfile

from subprocess_runs import xla_flags

os.environ.setdefault("XLA_FLAGS", xla_flags(8))   # with the suite's compile options
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="fer_jax_test_jit_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

import sys

# triton (pulled in by torchvision/timm; GPU-only) segfaults on import when
# TensorFlow was imported first, as several test modules do. Hide it: torch then
# runs without it, as on any CPU-only machine.
if "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]

import pytest  # noqa: E402

# The test files that take longest (measured: --durations at 71a0d95), slowest first. The
# workers (--dist loadfile) take files in collection order, so these start first and the
# many short files fill in at the end, and both workers finish together. (pytest-xdist
# would otherwise order files by their number of tests, which put the two multi-process
# tests last, one worker running them alone for minutes.) test_end_to_end makes the shared
# trained run early, before the other files that read it ask for it.
SLOWEST_FIRST = ("test_multiprocess.py", "test_training_time.py", "test_end_to_end.py",
                 "test_cam_parity.py", "test_resume.py", "test_cutmix.py", "test_plugins.py",
                 "test_train_step.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist present
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)
    items.sort(key=rank)   # stable: the order within a file, and among the rest, is kept


def made_once(tmp_path_factory, name: str, make):
    """Folder `name`, filled by `make(folder)` once per test session, whatever the number of
    xdist workers: the first worker to ask makes it under a file lock, the others wait for
    it and reuse it (they only read it). Returns (folder, what `make` returned, pickled)."""
    import pickle

    import filelock
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent        # the session's folder, above each worker's own
    folder, made = root / name, root / f"{name}.made.pickle"   # the marker beside, not in it
    with filelock.FileLock(str(root / f"{name}.lock")):
        if not made.exists():
            folder.mkdir()
            made.write_bytes(pickle.dumps(make(folder)))
    return folder, pickle.loads(made.read_bytes())


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """synthetic_faces/tiny (32 px, 112 train / 56 test) built once per test session."""
    from data_prep import build

    def make(folder):
        build.build_dataset("synthetic_faces/tiny", str(folder))   # its builder: not kept
    return str(made_once(tmp_path_factory, "tiny_tfds", make)[0])


@pytest.fixture
def tiny_config(tiny_data_dir):
    """The demo config shrunk to seconds: tiny data, a narrow ResNet-18, 8 devices."""
    return make_tiny_config(tiny_data_dir)


def make_tiny_config(tiny_data_dir):
    """What the `tiny_config` fixture returns (for module-scoped fixtures)."""
    from fer_jax import config_schema
    c = config_schema.defaults()
    c.dataset.name = "synthetic_faces/tiny"
    c.dataset.data_dir = tiny_data_dir
    c.dataset.image_size = 32
    c.model.width = 4
    c.train.batch_size = 16
    c.train.num_epochs = 1.0
    c.train.progress_bar = False
    c.train.log_every_steps = 1      # every step's scalars: runs are compared step by step
    c.eval.batch_size = 16
    c.eval.num_plot_images = 4
    c.eval.faithfulness_steps = 4
    return c


@pytest.fixture(scope="session")
def trained_run(tiny_data_dir, tmp_path_factory):
    """(workdir, results) of one tiny pmap run, shared by the tests that read a finished run
    (and by the xdist workers: it is trained once per session)."""
    from fer_jax import train
    return made_once(tmp_path_factory, "trained_run", lambda d: train.train_and_evaluate(
        make_tiny_config(tiny_data_dir), str(d)))


@pytest.fixture(scope="session")
def resnet_case():
    """(model, variables, images (3, 32, 32, 3), labels (3,)) of a random ResNet-18/4 with
    large maps: capture and CAM tests read its layers."""
    import jax
    import jax.numpy as jnp
    from fer_jax import models
    from fer_jax.models import resnet
    model = resnet.ResNet18(num_classes=5, width=4, large_maps=True)
    x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
    return model, models.initial_variables(model, jax.random.key(1), 32), x, jnp.array([1, 0, 4])


@pytest.fixture(scope="session")
def vit_case():
    """(model, variables, images (2, 32, 32, 3), labels (2,)) of a random 3-block ViT with a
    4x4 patch grid and 3 heads."""
    import jax
    import jax.numpy as jnp
    from fer_jax import models
    from fer_jax.models import vit
    model = vit.ViT(num_classes=5, patch_size=8, embed_dim=24, depth=3, num_heads=3,
                    image_size=32)
    x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    return model, models.initial_variables(model, jax.random.key(3), 32), x, jnp.array([2, 3])
