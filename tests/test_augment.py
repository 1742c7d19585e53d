"""The NumPy augmentation reproduces the TensorFlow one (same 17 uniforms, same records):
images (after normalisation) and heatmaps within 1e-5."""
import numpy as np
import pytest
import tensorflow as tf

from data_prep import faces
import tf_augment
from fer_jax import augment, config_schema, datasets

TOLERANCE = 1e-5   # max abs difference, normalised image and [0, 1] heatmap
# (measured: at most 5.6e-6 on the images, 0 on the heatmaps)


def input_config(**overrides):
    c = config_schema.defaults().input
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def examples(tiny_data_dir):
    """Eight decoded train records (32 px): images and heatmaps in [0, 1]."""
    source = datasets.find("synthetic_faces/tiny", tiny_data_dir).split_source("train")
    out = []
    for i in range(8):
        ex = datasets.decode(source[i])
        out.append((faces.unit_image(ex["image"]), ex["heatmap"].astype(np.float32) / 255))
    return out


def tf_reference(image, heatmap, u, cfg):
    ex = {"image": tf.constant(image), "heatmap": tf.constant(heatmap)}
    out = tf_augment.augment_with(ex, tf.constant(u), cfg)
    return out["image"].numpy(), out["heatmap"].numpy()


def max_differences(image, heatmap, u, cfg):
    got = augment.augment(image, heatmap, u, cfg)
    want = tf_reference(image, heatmap, u, cfg)
    return (np.abs(faces.normalise(got[0]) - faces.normalise(want[0])).max(),
            np.abs(got[1] - want[1]).max())


SETTINGS = {
    "defaults": {},
    "everything_always": dict(rotation_prob=1.0, rotation_deg=30.0, crop_scale_min=0.3,
                              color_jitter_prob=1.0, grayscale_prob=0.5, erase_prob=1.0),
    "strong_colour": dict(color_jitter=(0.8, 0.8, 0.9, 0.5), color_jitter_prob=1.0,
                          grayscale_prob=0.0),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_numpy_augmentation_equals_tensorflow_on_records(examples, setting):
    cfg = input_config(**SETTINGS[setting])
    worst = np.zeros(2)
    for number, (image, heatmap) in enumerate(examples * 3):
        u = augment.uniforms(seed=11, number=number)
        worst = np.maximum(worst, max_differences(image, heatmap, u, cfg))
    assert worst[0] <= TOLERANCE and worst[1] <= TOLERANCE, worst


def test_saturation_and_hue_equal_tensorflows_kernels_on_every_colour_ordering():
    """All six orderings of (r, g, b), ties, greys and black, at extreme factors, against
    tf.image.adjust_saturation then adjust_hue (measured: at most 9.6e-7 apart)."""
    rng = np.random.default_rng(0)
    colours = np.concatenate([
        rng.uniform(size=(500, 3)), rng.integers(0, 3, (200, 3)) / 2.0,
        np.array([[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1]])],
    ).astype(np.float32)[None]
    for scale in (0.0, 0.3, 1.0, 1.9):
        for delta in (-0.5, -0.1, 0.0, 0.07, 0.5):
            want = tf.image.adjust_hue(tf.image.adjust_saturation(colours, scale), delta)
            np.testing.assert_allclose(augment.adjust_saturation_and_hue(colours, scale, delta),
                                       want.numpy(), atol=1e-6, err_msg=f"{scale} {delta}")


def test_uniforms_are_a_pure_function_of_seed_and_number():
    a = augment.uniforms(3, 10)
    assert a.shape == (augment.NUM_UNIFORMS,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, augment.uniforms(3, 10))
    assert not np.array_equal(a, augment.uniforms(3, 11))
    assert not np.array_equal(a, augment.uniforms(4, 10))
    assert (a >= 0).all() and (a < 1).all()
