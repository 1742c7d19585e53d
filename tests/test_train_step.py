"""The data-parallel train step: 8 devices give the numbers of 1 device on the whole batch.

conftest.py simulates 8 CPU devices. Plain SGD with learning rate 1 makes the
parameter change equal to minus the gradient, so new params compare gradients.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fer_jax import data_parallel, models, train
from fer_jax.models import resnet

BATCH = 16


def make_state():
    model = resnet.ResNet18(num_classes=7, width=4, large_maps=True,
                            bn_axis_name=data_parallel.AXIS)
    v = models.initial_variables(model, jax.random.key(0), 32)
    return train.TrainState.create(apply_fn=model.apply, params=v["params"],
                                   batch_stats=v["batch_stats"], tx=optax.sgd(1.0))


def make_batch():
    rng = np.random.default_rng(0)
    heat = rng.uniform(0, 1, (BATCH, 32, 32)).astype(np.float32)
    valid = (rng.uniform(size=BATCH) > 0.3).astype(np.float32)
    return {
        "image": rng.normal(size=(BATCH, 32, 32, 3)).astype(np.float32),
        "heatmap": heat, "valid": valid,
        "label": rng.integers(0, 7, BATCH).astype(np.int32),
        "mask": np.ones(BATCH, np.float32),
    }


def run(spmd, num_devices, align_weight=3.0):
    devices = jax.devices()[:num_devices]
    dp = data_parallel.DataParallel(spmd=spmd, devices=devices)
    step = dp.wrap(functools.partial(train.train_step, align_layers=("stage3", "stage4"),
                                     align_weight=align_weight))
    batch = {k: v.reshape((num_devices, -1) + v.shape[1:]) for k, v in make_batch().items()}
    state, metrics = step(dp.replicate(make_state()), dp.shard(batch))
    return jax.device_get(dp.unreplicate(state)), jax.device_get(dp.unreplicate(metrics))


@pytest.fixture(scope="module")
def reference():
    assert jax.device_count() == 8, "conftest.py should simulate 8 CPU devices"
    return run(spmd=False, num_devices=1)


@pytest.mark.parametrize("spmd", [False, True], ids=["pmap", "shard_map"])
def test_eight_devices_match_one_device_on_the_whole_batch(reference, spmd):
    ref_state, ref_metrics = reference
    state, metrics = run(spmd=spmd, num_devices=8)
    for k in ("loss", "ce", "align", "accuracy"):
        np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=2e-5, atol=1e-6, err_msg=k)
    assert ref_metrics["align"] > 0.0
    # Gradients (params moved by SGD with lr 1) and synchronised BatchNorm statistics.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 state.params, ref_state.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 state.batch_stats, ref_state.batch_stats)


def test_shard_map_on_one_device_matches_pmap(reference):
    _, ref_metrics = reference
    _, metrics = run(spmd=True, num_devices=1)
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-6)


def _np_cosine(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def test_loss_is_cross_entropy_plus_lambda_times_alignment(reference):
    """The step's loss against CE and R recomputed in NumPy from the model's raw outputs."""
    _, m = reference
    state, batch = make_state(), make_batch()
    plain = resnet.ResNet18(num_classes=7, width=4, large_maps=True)  # BN over the whole batch
    logits, st = plain.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, method: method == "__call__" and mdl.path in (
            ("stage3",), ("stage4",)))
    logits = np.asarray(logits, np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    ce = -log_p[np.arange(BATCH), batch["label"]].mean()
    valid = batch["valid"]
    terms = []
    for layer in ("stage3", "stage4"):
        att = np.asarray(st["intermediates"][layer]["__call__"][0]).mean(-1)
        target = np.asarray(jax.image.resize(batch["heatmap"], (BATCH,) + att.shape[1:],
                                             "linear", antialias=True))
        terms.append((valid * (1 - _np_cosine(att, target))).sum() / valid.sum())
    r = np.mean(terms)
    np.testing.assert_allclose(m["ce"], ce, rtol=1e-5)
    np.testing.assert_allclose(m["align"], r, rtol=1e-5)
    np.testing.assert_allclose(m["loss"], ce + 3.0 * r, rtol=1e-5)


def test_zero_weight_captures_nothing_and_trains_on_cross_entropy_only(reference):
    _, ref_metrics = reference
    _, m = run(spmd=False, num_devices=1, align_weight=0.0)
    assert m["align"] == 0.0
    np.testing.assert_allclose(m["loss"], m["ce"], rtol=1e-6)
    np.testing.assert_allclose(m["ce"], ref_metrics["ce"], rtol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_close_loss(reference):
    _, ref_metrics = reference
    model = resnet.ResNet18(num_classes=7, width=4, large_maps=True, dtype=jnp.bfloat16,
                            bn_axis_name=data_parallel.AXIS)
    v = models.initial_variables(model, jax.random.key(0), 32)
    state = train.TrainState.create(apply_fn=model.apply, params=v["params"],
                                    batch_stats=v["batch_stats"], tx=optax.sgd(1.0))
    dp = data_parallel.DataParallel(devices=jax.devices()[:1])
    step = dp.wrap(functools.partial(train.train_step, align_layers=("stage3", "stage4"),
                                     align_weight=3.0))
    batch = {k: v[None] for k, v in make_batch().items()}
    new, m = step(dp.replicate(state), dp.shard(batch))
    m = jax.device_get(dp.unreplicate(m))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(dp.unreplicate(new).params))
    np.testing.assert_allclose(m["loss"], ref_metrics["loss"], rtol=0.05)


def test_stochastic_depth_draws_from_the_step():
    """A ViT with drop_path > 0 trains; its random drops are a function of the step, so a
    resumed run drops what the uninterrupted one would."""
    from fer_jax import config_schema
    cfg = config_schema.defaults().model
    cfg.name, cfg.drop_path, cfg.vit_pos_size = "vit_micro_patch8", 0.9, 32
    model = models.create_model(cfg, 7)
    v = models.initial_variables(model, jax.random.key(0), 32)
    state = train.TrainState.create(apply_fn=model.apply, params=v["params"], batch_stats={},
                                    tx=optax.sgd(1.0))
    dp = data_parallel.DataParallel(devices=jax.devices()[:2])
    batch = dp.shard({k: v.reshape((2, -1) + v.shape[1:]) for k, v in make_batch().items()})
    step = dp.wrap(functools.partial(train.train_step, align_layers=("block5",),
                                     align_weight=1.0))

    def loss(at_step):
        _, m = step(dp.replicate(state.replace(step=at_step)), batch)
        return float(jax.device_get(dp.unreplicate(m))["loss"])

    assert loss(3) == loss(3) != loss(4)
