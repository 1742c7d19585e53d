"""Training-time CAM heads and ADL (fer_jax.methods) against NumPy, and their built-in maps.

Each head's logits are recomputed in NumPy from the captured cam layer and the
head's parameters; its built-in CAM (fer_jax.cams.builtin, through the engine)
from the same NumPy class map, min-max normalised and upsampled.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import cams, capture
from fer_jax import methods
from fer_jax.methods import acol, adl, wildcat
from fer_jax.models import resnet, vit

CLASSES = np.array([1, 0, 4])


def random_variables(module, input_shape, seed=0):
    """Variables of `module` for inputs of `input_shape`, drawn in NumPy.

    Kernels ~ N(0, 1 / fan_in), scales and running variances near 1, other
    leaves small. (jax.jit(model.init) compiles the random initialisers of a
    ResNet for about a minute on the 2-core test machine; this takes none.)
    """
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(input_shape))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            value = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        elif name in ("scale", "var"):
            value = 1.0 + 0.2 * rng.uniform(size=shape)
        else:
            value = 0.1 * rng.normal(size=shape)
        return jnp.asarray(value, leaf.dtype)
    return jax.tree_util.tree_map_with_path(draw, shapes)


def np_conv(x, kernel, bias, padding=0):
    """Cross-correlation of (B, h, w, C) with a (kh, kw, C, O) kernel, zero padding."""
    kh, kw = kernel.shape[:2]
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h, w = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    return sum(xp[:, i:i + h, j:j + w] @ kernel[i, j] for i in range(kh) for j in range(kw)) + bias


def np_min_max(m):
    lo, hi = m.min((1, 2), keepdims=True), m.max((1, 2), keepdims=True)
    return (m - lo) / (hi - lo)


def np_pick(maps, classes):
    return maps[np.arange(len(classes)), :, :, classes]


def np_acol_branch(f, p):
    relu = lambda a: np.maximum(a, 0.0)
    y = relu(np_conv(f, p["conv1"]["kernel"], p["conv1"]["bias"], 1))
    y = relu(np_conv(y, p["conv2"]["kernel"], p["conv2"]["bias"], 1))
    return np_conv(y, p["conv3"]["kernel"], p["conv3"]["bias"])


def np_acol(f, p, classes, threshold):
    """(logits of A, logits of B, max of the normalised maps) with B on f erased by A[classes]."""
    maps_a = np_acol_branch(f, p["branch_a"])
    keep = np_min_max(np_pick(maps_a, classes)) < threshold
    maps_b = np_acol_branch(f * keep[..., None], p["branch_b"])
    both = np.maximum(np_min_max(np_pick(maps_a, classes)), np_min_max(np_pick(maps_b, classes)))
    return maps_a.mean((1, 2)), maps_b.mean((1, 2)), both


def np_head(kind, f, p, options, classes):
    """(logits (B, K), built-in map of `classes` (B, h, w)) of a head, in float64."""
    if kind == "wildcat":
        b, h, w, _ = f.shape
        maps = np_conv(f, p["conv"]["kernel"], p["conv"]["bias"])
        maps = maps.reshape(b, h, w, -1, options.modalities).mean(-1)
        ordered = np.sort(maps.reshape(b, h * w, -1), axis=1)[:, ::-1]   # descending
        n_max, n_min = round(options.kmax * h * w), round(options.kmin * h * w)
        logits = (ordered[:, :n_max].mean(1) + options.alpha * ordered[:, -n_min:].mean(1)) / 2
        return logits, np_pick(maps, classes)
    if kind == "acol":
        logits, _, both = np_acol(f, p, classes, options.acol_threshold)
        return logits, both
    maps = np_conv(f, p["conv"]["kernel"], p["conv"]["bias"])      # prm
    b, h, w, k = maps.shape
    peaks = np.stack([maps[:, i:i + 3, j:j + 3].max((1, 2)) for i in range(h - 2)
                      for j in range(w - 2)], axis=1)
    return peaks.mean(1), np_pick(maps, classes)


def upsampled(raw, size=32):
    """What the engine does to a raw map: min-max, bilinear to the input size."""
    return np.asarray(jax.image.resize(jnp.asarray(np_min_max(raw)), (raw.shape[0], size, size),
                                       "linear"))


@pytest.mark.parametrize("kind", ["wildcat", "acol", "prm"])
def test_cnn_head_logits_and_built_in_map_match_numpy(kind):
    # Not the defaults, so that every setting reaches the computation: on 4x4 maps
    # kmax 0.4 -> 6 positions, kmin 0.2 -> 3.
    options = methods.Options(modalities=3, kmax=0.4, kmin=0.2, alpha=0.7, acol_threshold=0.3)
    model = resnet.ResNet18(num_classes=5, width=4, large_maps=True, head=kind,
                            wsol_options=options)
    x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
    v = random_variables(model, x.shape)
    spec = cams.spec_for(model, (kind,))
    out = jax.jit(lambda v, x: cams.explain(model, v, x, jnp.asarray(CLASSES), spec))(v, x)
    f = np.asarray(out.probe.features["stage4"], np.float64)   # the head's input
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"]["head"])
    logits, raw = np_head(kind, f, params, options, CLASSES)
    np.testing.assert_allclose(np.asarray(out.probe.logits), logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.maps[kind]), upsampled(raw), atol=1e-5)
    assert cams.builtin_method(model) == kind and kind in cams.applicable(model)
    assert "cam" not in cams.applicable(model)      # no linear GAP head to read


def test_wildcat_without_bottom_positions_pools_the_mean_of_the_top_ones():
    """kmin = 0 (or alpha = 0): the top mean alone, not halved (what the reference code computes)."""
    maps = np.random.default_rng(0).normal(size=(2, 5, 4, 3))
    got = np.asarray(wildcat.wildcat_pool(jnp.asarray(maps), kmax=0.5, kmin=0.0, alpha=0.6))
    top = np.sort(maps.reshape(2, 20, 3), axis=1)[:, -10:].mean(1)
    np.testing.assert_allclose(got, top, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(wildcat.wildcat_pool(jnp.asarray(maps), 0.5, 0.1, 0.0)),
                               top, rtol=1e-6)


def test_acol_trains_branch_b_on_features_erased_by_the_label():
    head = acol.AcolHead(num_classes=4, hidden=6, threshold=0.3)
    f = jax.random.normal(jax.random.key(2), (3, 5, 5, 7))
    v = random_variables(head, f.shape)
    logits, state = jax.jit(lambda v, f, labels: head.apply(
        v, f, train=True, labels=labels, mutable=[methods.AUX_LOGITS]))(v, f, jnp.array([0, 3, 2]))
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
    labels = np.array([0, 3, 2])
    want_a, want_b, _ = np_acol(np.asarray(f, np.float64), params, labels, 0.3)
    assert not np.array_equal(want_a.argmax(1), labels)   # the label, not the prediction, erases
    np.testing.assert_allclose(np.asarray(logits), want_a, rtol=1e-4, atol=1e-6)
    (logits_b,) = jax.tree.leaves(state[methods.AUX_LOGITS])
    np.testing.assert_allclose(np.asarray(logits_b), want_b, rtol=1e-4, atol=1e-6)
    _, state = head.apply(v, f, mutable=[methods.AUX_LOGITS])   # evaluation: nothing sown
    assert not jax.tree.leaves(state)


def test_acol_erase_by_prediction_trains_branch_b_on_features_erased_by_its_first_branchs_guess():
    """model.acol_erase_by='prediction': in training too, B reads the features erased by A's
    map of A's predicted class, so the mask cannot tell B the label."""
    head = acol.AcolHead(num_classes=4, hidden=6, threshold=0.3, erase_by="prediction")
    f = jax.random.normal(jax.random.key(2), (3, 5, 5, 7))
    v = random_variables(head, f.shape)
    labels = np.array([0, 3, 2])
    _, state = jax.jit(lambda v, f, labels: head.apply(
        v, f, train=True, labels=labels, mutable=[methods.AUX_LOGITS]))(v, f, jnp.asarray(labels))
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
    f64 = np.asarray(f, np.float64)
    want_a, by_label, _ = np_acol(f64, params, labels, 0.3)
    predicted = want_a.argmax(1)
    assert not np.array_equal(predicted, labels)   # so the two modes differ here
    _, want_b, _ = np_acol(f64, params, predicted, 0.3)
    assert not np.allclose(want_b, by_label, rtol=1e-3)   # the two masks give B other logits
    (logits_b,) = jax.tree.leaves(state[methods.AUX_LOGITS])
    np.testing.assert_allclose(np.asarray(logits_b), want_b, rtol=1e-4, atol=1e-6)


def test_ts_cam_logits_and_map_match_numpy():
    model = vit.ViT(num_classes=4, patch_size=8, embed_dim=12, depth=2, num_heads=2,
                    image_size=32, head="tscam")
    x = jax.random.normal(jax.random.key(4), (3, 32, 32, 3))
    classes = jnp.array([3, 0, 1])
    v = random_variables(model, x.shape)
    spec = cams.spec_for(model, ("tscam",))
    out = jax.jit(lambda v, x: cams.explain(model, v, x, classes, spec))(v, x)
    probe = out.probe   # the pass that made the map: its head input and attention
    grid = np.asarray(probe.features["encoder_norm_grid"], np.float64)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"]["head"]["conv"])
    semantic = np_conv(grid, p["kernel"], p["bias"], padding=1)
    np.testing.assert_allclose(np.asarray(out.probe.logits), semantic.mean((1, 2)), rtol=1e-4,
                               atol=1e-5)
    attention = sum(np.asarray(probe.taps[n], np.float64).mean(1)[:, 0, 1:]
                    for n in model.attention_layers).reshape(3, 4, 4)
    raw = np_pick(semantic, np.asarray(classes)) * attention
    np.testing.assert_allclose(np.asarray(out.maps["tscam"]), upsampled(raw), atol=1e-5)
    assert model.cam_layer == "encoder_norm_grid" and cams.builtin_method(model) == "tscam"


def test_adl_leaves_evaluation_unchanged_and_acts_in_training():
    x = jax.random.normal(jax.random.key(6), (4, 32, 32, 3))
    plain = resnet.ResNet18(num_classes=5, width=4, large_maps=True)
    adl = resnet.ResNet18(num_classes=5, width=4, large_maps=True, adl=True)
    v = random_variables(plain, x.shape)
    assert jax.tree.structure(random_variables(adl, x.shape)) == jax.tree.structure(v)  # none
    np.testing.assert_array_equal(np.asarray(jax.jit(adl.apply)(v, x)),
                                  np.asarray(jax.jit(plain.apply)(v, x)))
    trained = [jax.jit(lambda v, x, key, m=m: m.apply(
        v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})[0])(
            v, x, jax.random.key(8)) for m in (plain, adl)]
    assert np.abs(np.asarray(trained[0]) - np.asarray(trained[1])).max() > 1e-4
    assert cams.builtin_method(adl) == "cam"


def test_adl_sits_where_the_reference_code_puts_it():
    """After the first block of stage3, and after the first and the last block of stage4."""
    model = resnet.ResNet50(num_classes=5, width=4, large_maps=True, adl=True)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    names = [n for n in capture.spatial_layers(model, v, (32, 32, 3))
             if n.count("/") == 1 and n.split("/")[0] in ("stage3", "stage4")]
    assert names == ["stage3/block0", "stage3/adl0"] + [f"stage3/block{i}" for i in range(1, 6)] + [
        "stage4/block0", "stage4/adl0", "stage4/block1", "stage4/block2", "stage4/adl2"]


def test_adl_multiplies_by_the_drop_mask_at_its_rate_else_by_the_importance_map():
    x = jax.random.normal(jax.random.key(9), (4, 5, 5, 6)) + 0.3
    att = np.asarray(x, np.float64).mean(-1, keepdims=True)
    drop = np.asarray(x) * (att < 0.2 * att.max((1, 2), keepdims=True))
    importance = np.asarray(x) * (1 / (1 + np.exp(-att)))
    assert drop.any() and not np.allclose(drop, np.asarray(x))   # the mask drops some positions

    @functools.partial(jax.jit, static_argnums=0)
    def run_jit(rate, key):
        return adl.ADL(drop_rate=rate, threshold=0.2).apply({}, x, train=True,
                                                             rngs={"dropout": key})

    def run(rate, key):
        return np.asarray(run_jit(rate, key))
    np.testing.assert_allclose(run(1.0, jax.random.key(0)), drop, rtol=1e-6)
    np.testing.assert_allclose(run(0.0, jax.random.key(0)), importance, rtol=1e-5)
    dropped = [np.allclose(run(0.4, jax.random.key(i)), drop) for i in range(300)]
    assert 0.31 < np.mean(dropped) < 0.49                  # binomial sd 0.028 around 0.4
    np.testing.assert_array_equal(np.asarray(adl.ADL(1.0, 0.2).apply({}, x)), np.asarray(x))
