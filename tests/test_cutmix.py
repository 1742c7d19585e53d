"""CutMix (fer_jax.cutmix): box, pasting of images and AU maps, and the mixed loss of the step."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fer_jax import config_schema, cutmix, methods, train
from fer_jax.models import resnet
from test_wsol import random_variables


def _batch(b=4, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(b, size, size, 3)).astype(np.float32),
        "heatmap": rng.uniform(size=(b, size, size)).astype(np.float32),
        "valid": np.array([1, 1, 0, 1], np.float32)[:b],
        "label": rng.integers(0, 7, b).astype(np.int32),
        "mask": np.ones(b, np.float32),
    }


def _np_paste(batch, y0, y1, x0, x1, partners):
    """CutMix's pasting, written out: slices replaced by the partner's."""
    image, heat = batch["image"].copy(), batch["heatmap"].copy()
    image[:, y0:y1, x0:x1] = batch["image"][partners, y0:y1, x0:x1]
    heat[:, y0:y1, x0:x1] = batch["heatmap"][partners, y0:y1, x0:x1]
    area = (y1 - y0) * (x1 - x0)
    side = image.shape[1]
    own_left, pasted = np.bool_(area < side * side), np.bool_(area > 0)
    valid = ((batch["valid"] > 0) | ~own_left) & ((batch["valid"][partners] > 0) | ~pasted)
    return image, heat, valid.astype(np.float32), batch["label"][partners], 1 - area / side ** 2


def test_paste_mixes_images_au_maps_labels_and_valid_flags_with_one_box():
    batch, partners = _batch(), np.array([2, 0, 3, 1])     # valid: [1, 1, 0, 1]
    # A box: valid where both maps are; no box: the own flags; the whole image: the partner's.
    cases = {(1, 4, 2, 6): [0, 1, 0, 1], (0, 0, 3, 3): [1, 1, 0, 1], (0, 8, 0, 8): [0, 1, 1, 1]}
    for box, want_valid in cases.items():
        mixed, labels, lam = cutmix.paste({k: jnp.asarray(v) for k, v in batch.items()},
                                          cutmix.Box(*map(jnp.int32, box)), jnp.asarray(partners))
        image, heat, valid, want_labels, want_lam = _np_paste(batch, *box, partners)
        np.testing.assert_array_equal(np.asarray(mixed["image"]), image)
        np.testing.assert_array_equal(np.asarray(mixed["heatmap"]), heat)
        np.testing.assert_array_equal(np.asarray(mixed["valid"]), valid, err_msg=str(box))
        np.testing.assert_array_equal(np.asarray(labels), want_labels)
        np.testing.assert_allclose(float(lam), want_lam, rtol=1e-6)
        assert valid.tolist() == want_valid, box


def _np_box_lams(rng, n, side, beta):
    """The own-image fraction of CutMix's reference sampler (rand_bbox), n draws."""
    lams = []
    for _ in range(n):
        cut = int(side * np.sqrt(1.0 - rng.beta(beta, beta)))
        cy, cx = rng.integers(side), rng.integers(side)
        y0, y1 = np.clip([cy - cut // 2, cy + cut // 2], 0, side)
        x0, x1 = np.clip([cx - cut // 2, cx + cut // 2], 0, side)
        lams.append(1 - (y1 - y0) * (x1 - x0) / side ** 2)
    return np.array(lams)


@pytest.mark.parametrize("beta", [1.0, 3.0])    # 1: drawn as a uniform; else Beta's sampler
def test_boxes_follow_cutmix_sampling_and_its_probability(beta):
    keys = jax.random.split(jax.random.key(0), 2000)
    draw = jax.jit(jax.vmap(lambda k, p: cutmix.draw_box(k, (32, 32), p, beta), (0, None)))
    box = jax.tree.map(np.asarray, draw(keys, 1.0))
    assert (box.y0 >= 0).all() and (box.y1 <= 32).all() and (box.y0 <= box.y1).all()
    assert (box.x0 >= 0).all() and (box.x1 <= 32).all() and (box.x0 <= box.x1).all()
    lam = 1 - (box.y1 - box.y0) * (box.x1 - box.x0) / 32 ** 2
    reference = _np_box_lams(np.random.default_rng(0), 2000, 32, beta)
    # Means of 2000 draws (sd of one draw at most about 0.25): within 0.03 of each other.
    assert abs(lam.mean() - reference.mean()) < 0.03, (lam.mean(), reference.mean())
    assert abs(np.median(lam) - np.median(reference)) < 0.04
    if beta != 1.0:
        return
    none = jax.tree.map(np.asarray, draw(keys, 0.0))
    assert (none.y0 == none.y1).all()                       # probability 0: never a box
    some = jax.tree.map(np.asarray, draw(keys, 0.3))
    assert 0.26 < np.mean(some.y1 > some.y0) < 0.34         # binomial sd 0.01 around 0.3


def test_train_step_loss_is_lam_weighted_cross_entropy_and_alignment_on_the_mixed_map():
    """The step's CE and R against NumPy on the batch cutmix.mix gives for (seed, step 0)."""
    model = resnet.ResNet18(num_classes=7, width=4, large_maps=True)
    v = random_variables(model, (1, 32, 32, 3))
    state = train.TrainState.create(apply_fn=model.apply, params=v["params"],
                                    batch_stats=v["batch_stats"], tx=optax.sgd(0.0))
    rng = np.random.default_rng(1)
    batch = {"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
             "heatmap": rng.uniform(size=(8, 32, 32)).astype(np.float32),
             "valid": (rng.uniform(size=8) > 0.3).astype(np.float32),
             "label": rng.integers(0, 7, 8).astype(np.int32), "mask": np.ones(8, np.float32)}
    seed = 3
    config = config_schema.defaults()
    config.train.cutmix_prob, config.train.cutmix_beta = 1.0, 1.0
    _, metrics = jax.jit(lambda s, b: train.train_step(
        s, b, align_layers=("stage4",), align_weight=2.0, seed=seed,
        batch_transform=methods.batch_transform(config), axis_name=None))(state, batch)
    mixed, partners, lam = cutmix.mix(batch, *cutmix.keys(seed, jnp.int32(0), 0), 1.0, 1.0)
    assert 0.0 < float(lam) < 1.0 and not np.array_equal(np.asarray(partners), batch["label"])
    logits, st = jax.jit(lambda v, x: model.apply(
        v, x, train=True, mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda m, _: m.path == ("stage4",)))(v, mixed["image"])
    log_p = np.asarray(jax.nn.log_softmax(logits), np.float64)
    lam = float(lam)
    ce = -(lam * log_p[np.arange(8), batch["label"]]
           + (1 - lam) * log_p[np.arange(8), np.asarray(partners)]).mean()
    att = np.asarray(st["intermediates"]["stage4"]["__call__"][0], np.float64).mean(-1)
    target = np.asarray(jax.image.resize(mixed["heatmap"], (8,) + att.shape[1:], "linear",
                                         antialias=True), np.float64)
    cos = (att * target).sum((1, 2)) / (np.linalg.norm(att.reshape(8, -1), axis=1)
                                        * np.linalg.norm(target.reshape(8, -1), axis=1) + 1e-8)
    valid = np.asarray(mixed["valid"])
    r = (valid * (1 - cos)).sum() / valid.sum()
    np.testing.assert_allclose(float(metrics["ce"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["align"]), r, rtol=1e-5)
    assert not np.array_equal(np.asarray(mixed["heatmap"]), batch["heatmap"])  # maps mixed too
