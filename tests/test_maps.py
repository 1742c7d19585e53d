"""fer_jax.maps: the one copy of the map arithmetic, against NumPy and by its guarantees."""
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import maps


def test_downsampling_is_antialiased():
    # A checkerboard averages to grey with antialiasing (plain bilinear
    # sampling would pick single pixels and keep 0/1 values).
    board = (np.indices((16, 16)).sum(0) % 2).astype(np.float32)[None]
    small = np.asarray(maps.resize_clamped(jnp.asarray(board), (4, 4), antialias=True))
    np.testing.assert_allclose(small, 0.5, atol=0.05)


def test_resized_maps_never_leave_the_input_range():
    # Float rounding in the resampling weights pushes a constant 0.7 map up to
    # 0.7000002 without the clamp (measured); with it the map stays exactly 0.7.
    for value in (0.7, 0.9, 1.0):
        flat = jnp.full((1, 64, 64), value, jnp.float32)
        for size, antialias in (((7, 7), True), ((9, 9), True), ((128, 128), False)):
            out = np.asarray(maps.resize_clamped(flat, size, antialias=antialias))
            assert out.max() <= np.float32(value) and out.min() >= np.float32(value), (
                value, size, out.max() - value)


def test_min_max_of_a_flat_map_is_zero_not_nan():
    out = np.asarray(maps.min_max(jnp.full((2, 4, 4), 3.0)))
    assert np.all(out == 0.0)
    ramp = np.arange(16, dtype=np.float32).reshape(1, 4, 4) * 2 - 5
    np.testing.assert_allclose(np.asarray(maps.min_max(jnp.asarray(ramp))), (ramp + 5) / 30)


def test_cosine_matches_numpy_per_sample():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    fa, fb = a.reshape(3, -1), b.reshape(3, -1)
    expected = (fa * fb).sum(1) / (np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1))
    np.testing.assert_allclose(np.asarray(maps.cosine(jnp.asarray(a), jnp.asarray(b))), expected,
                               rtol=1e-5)


def test_attention_upsampling_shifts_negative_maps_to_zero_minimum():
    att = np.array([[[-2.0, 1.0], [0.0, 3.0]]], np.float32)
    up = np.asarray(maps.upsample_attention(jnp.asarray(att), (8, 8)))
    assert up.shape == (1, 8, 8)
    np.testing.assert_allclose(up.min(), 0.0, atol=1e-6)
    np.testing.assert_allclose(up.max(), 5.0, atol=1e-5)   # range kept, shifted by +2
    positive = np.asarray(maps.upsample_attention(jnp.asarray(att + 10), (8, 8)))
    np.testing.assert_allclose(positive, up + 8.0, atol=1e-5)  # no shift when min >= 0


def test_cam_upsampling_normalises_to_unit_range_at_the_target_size():
    cam = np.array([[[1.0, 2.0], [3.0, 5.0]]], np.float32)
    up = np.asarray(maps.upsample_cam(jnp.asarray(cam), (6, 6)))
    assert up.shape == (1, 6, 6)
    assert up.min() == 0.0 and up.max() == 1.0


def test_cosine_of_an_all_zero_map_has_a_finite_gradient():
    """ADL can zero every position of an aligned layer: the loss's gradient must stay
    finite (jnp.linalg.norm's is NaN at 0), so that the zero mask can cancel it."""
    zero = jnp.zeros((2, 4, 4))
    target = jnp.ones((2, 4, 4))
    grad = np.asarray(jax.grad(lambda a: jnp.sum(maps.cosine(a, target)))(zero))
    assert np.all(np.isfinite(grad))
    assert np.asarray(maps.cosine(zero, target)).tolist() == [0.0, 0.0]
    # Through a mask that drops everything, as ADL does, nothing reaches the features.
    feats = jnp.ones((2, 4, 4))
    upstream = jax.grad(lambda x: jnp.sum(1 - maps.cosine(x * 0.0, target)))(feats)
    assert np.all(np.asarray(upstream) == 0.0)
