"""Learning-rate schedules and optimisers from config.optim, against hand computation."""
import jax.numpy as jnp
import numpy as np

from fer_jax import config_schema, optim


def config(**optim_fields):
    c = config_schema.defaults()
    c.optim.update(optim_fields)
    return c


def test_step_schedule_decays_by_factor_every_decay_epochs():
    c = config(schedule="step", learning_rate=0.002, decay_epochs=4.0, decay_factor=0.9)
    lr = optim.learning_rate_schedule(c, steps_per_epoch=10, num_steps=200)
    # The paper: x0.9 every 4 epochs (40 steps here).
    for step, expected in [(0, 0.002), (39, 0.002), (40, 0.0018), (85, 0.002 * 0.81)]:
        np.testing.assert_allclose(float(lr(step)), expected, rtol=1e-6)


def test_warmup_then_cosine_reaches_zero_at_the_end():
    c = config(schedule="cosine", learning_rate=0.01, warmup_epochs=1.0)
    lr = optim.learning_rate_schedule(c, steps_per_epoch=10, num_steps=110)
    np.testing.assert_allclose(float(lr(5)), 0.005, rtol=1e-6)    # halfway up the ramp
    np.testing.assert_allclose(float(lr(10)), 0.01, rtol=1e-6)    # peak
    np.testing.assert_allclose(float(lr(60)), 0.005, rtol=1e-5)   # cosine midpoint
    assert float(lr(110)) < 1e-9


def test_sgd_is_nesterov_momentum_with_l2_weight_decay():
    c = config(name="sgd", schedule="constant", learning_rate=0.1, momentum=0.9,
               weight_decay=0.01)
    tx = optim.create_optimizer(c, optim.learning_rate_schedule(c, 1, 10))
    w = jnp.array([1.0, -2.0])
    g = jnp.array([0.5, 0.5])
    state = tx.init(w)
    upd, state = tx.update(g, state, w)
    d = g + 0.01 * w               # L2 folded into the gradient, as torch SGD does
    expected = -0.1 * (d + 0.9 * d)  # nesterov: g + mu * (mu * 0 + g) on the first step
    np.testing.assert_allclose(np.asarray(upd), np.asarray(expected), rtol=1e-6)


def test_adamw_decouples_weight_decay():
    c = config(name="adamw", schedule="constant", learning_rate=0.1, weight_decay=0.5)
    tx = optim.create_optimizer(c, optim.learning_rate_schedule(c, 1, 10))
    w = jnp.array([2.0])
    upd, _ = tx.update(jnp.array([0.0]), tx.init(w), w)  # zero gradient: only the decay acts
    np.testing.assert_allclose(np.asarray(upd), [-0.1 * 0.5 * 2.0], rtol=1e-5)
