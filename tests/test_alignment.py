"""The alignment loss and ATT-COS, checked against NumPy computations of docs/method.md."""
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import alignment


def np_cos(a, b):
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def test_identical_attention_and_heatmap_give_zero_loss():
    rng = np.random.default_rng(0)
    heat = rng.uniform(0, 1, (3, 8, 8)).astype(np.float32)
    feats = np.repeat(heat[..., None], 5, axis=-1)  # channel mean == heatmap
    r = alignment.alignment_loss([jnp.asarray(feats)], jnp.asarray(heat), jnp.ones(3))
    assert abs(float(r)) < 1e-6


def test_loss_matches_numpy_reference_with_invalid_samples_ignored():
    rng = np.random.default_rng(1)
    heat = rng.uniform(0, 1, (4, 8, 8)).astype(np.float32)
    feats = rng.normal(size=(4, 8, 8, 6)).astype(np.float32)
    valid = np.array([1, 0, 1, 1], np.float32)
    expected = (valid * (1 - np_cos(feats.mean(-1), heat))).sum() / valid.sum()
    r = alignment.alignment_loss([jnp.asarray(feats)], jnp.asarray(heat), jnp.asarray(valid))
    np.testing.assert_allclose(float(r), expected, rtol=1e-5)
    # Whatever the invalid sample's features are, the loss does not move.
    feats2 = feats.copy()
    feats2[1] = rng.normal(size=feats2[1].shape) * 100
    r2 = alignment.alignment_loss([jnp.asarray(feats2)], jnp.asarray(heat), jnp.asarray(valid))
    np.testing.assert_allclose(float(r2), float(r), rtol=1e-6)


def test_all_invalid_batch_gives_zero_loss_and_finite_gradients():
    heat = jnp.zeros((2, 8, 8))  # invalid maps are all-zero in the records
    feats = jnp.ones((2, 4, 4, 3))
    loss = lambda f: alignment.alignment_loss([f], heat, jnp.zeros(2))
    assert float(loss(feats)) == 0.0
    g = jax.grad(loss)(feats)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) == 0.0


def test_loss_is_mean_over_layers():
    rng = np.random.default_rng(2)
    heat = rng.uniform(0, 1, (2, 8, 8)).astype(np.float32)
    f1 = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    f2 = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    one = lambda f: float(alignment.alignment_loss([jnp.asarray(f)], heat, jnp.ones(2)))
    both = float(alignment.alignment_loss([jnp.asarray(f1), jnp.asarray(f2)], heat, jnp.ones(2)))
    np.testing.assert_allclose(both, (one(f1) + one(f2)) / 2, rtol=1e-5)


def test_att_cos_upsamples_shifts_negative_maps_and_compares_per_sample():
    rng = np.random.default_rng(3)
    heat = np.zeros((2, 16, 16), np.float32)
    heat[:, 4:8, 4:8] = 1.0
    # Constant negative attention: shifted by -min it becomes all zeros -> cosine 0.
    feats = -np.ones((2, 4, 4, 2), np.float32)
    np.testing.assert_allclose(np.asarray(alignment.att_cos(jnp.asarray(feats), heat)), 0.0,
                               atol=1e-6)
    # Attention equal to the block-downsampled heatmap upsamples back onto it.
    block = heat.reshape(2, 4, 4, 4, 4).mean((2, 4))
    feats = np.repeat(block[..., None], 3, -1)
    cos = np.asarray(alignment.att_cos(jnp.asarray(feats), heat))
    assert np.all(cos > 0.85), cos
    random = rng.uniform(0, 1, (2, 4, 4, 3)).astype(np.float32)
    assert np.all(np.asarray(alignment.att_cos(jnp.asarray(random), heat)) < cos)
