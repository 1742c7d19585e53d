"""Input pipeline: same geometry for image and heatmap, photometry for the image only,
data order a function of (seed, step) whatever the workers, evaluation sees every example
exactly once."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fer_jax import augment, config_schema, input_pipeline


def input_config(**overrides):
    c = config_schema.defaults().input
    for k, v in overrides.items():
        c[k] = v
    return c


def example(size=32):
    rng = np.random.default_rng(0)
    heat = np.zeros((size, size), np.float32)
    heat[4:12, 6:20] = 1.0  # off-centre and asymmetric, so any warp shows
    heat[20:26, 8:12] = 0.5
    image = np.stack([heat, rng.uniform(size=(size, size)), np.full((size, size), 0.3)], -1)
    return image.astype(np.float32), heat


NO_PHOTOMETRY = dict(color_jitter_prob=0.0, grayscale_prob=0.0, erase_prob=0.0)


@pytest.mark.parametrize("seed", range(6))
def test_geometric_augmentation_moves_image_and_heatmap_together(seed):
    cfg = input_config(rotation_prob=1.0, rotation_deg=15.0, crop_scale_min=0.6, **NO_PHOTOMETRY)
    image, heat = augment.augment(*example(), augment.uniforms(seed, 7), cfg)
    np.testing.assert_allclose(image[..., 0], heat, atol=1e-5)
    assert not np.allclose(heat, example()[1])


def test_flip_only_mirrors_image_and_heatmap_exactly():
    cfg = input_config(rotation_prob=0.0, crop_scale_min=1.0, **NO_PHOTOMETRY)
    original = example()[1]
    seen = set()
    for seed in range(8):
        image, heat = augment.augment(*example(), augment.uniforms(seed, 0), cfg)
        flipped = np.allclose(heat, original[:, ::-1], atol=1e-5)
        assert flipped or np.allclose(heat, original, atol=1e-5)
        seen.add(flipped)
        np.testing.assert_allclose(image[..., 0], heat, atol=1e-5)
    assert seen == {True, False}  # both happen over 8 seeds


def test_photometric_augmentation_never_touches_the_heatmap():
    cfg = input_config(rotation_prob=0.0, crop_scale_min=1.0, hflip=False, color_jitter_prob=1.0,
                       grayscale_prob=1.0, erase_prob=1.0)
    image, heat = augment.augment(*example(), augment.uniforms(3, 3), cfg)
    np.testing.assert_allclose(heat, example()[1], atol=1e-5)
    assert not np.allclose(image, example()[0], atol=1e-3)


def test_train_batches_have_the_device_layout(tiny_config):
    dataset = input_pipeline.get_dataset(tiny_config.dataset)
    batch = next(input_pipeline.train_batches(dataset, tiny_config, list(range(8)), 8))
    assert batch["image"].shape == (8, 2, 32, 32, 3)
    assert batch["heatmap"].shape == (8, 2, 32, 32)
    assert batch["label"].shape == batch["valid"].shape == batch["mask"].shape == (8, 2)
    assert batch["heatmap"].min() >= 0.0 and batch["heatmap"].max() <= 1.0


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        for k in e:
            np.testing.assert_array_equal(g[k], e[k], err_msg=k)


def test_data_order_is_a_function_of_seed_and_step_whatever_the_workers(tiny_config):
    """Started at step s (as a resumed run is), the stream is the uninterrupted one from s,
    also when two Grain worker processes prepare it.

    112 examples, batch 16: 7 steps per epoch; step 9 is in the second epoch.
    """
    dataset = input_pipeline.get_dataset(tiny_config.dataset)
    shards = [0, 1, 2, 3]
    run = take(input_pipeline.train_batches(dataset, tiny_config, shards, 4), 12)
    tiny_config.input.workers = 2
    resumed = input_pipeline.train_batches(dataset, tiny_config, shards, 4, start_step=9)
    assert_same_batches(take(resumed, 3), run[9:])
    resumed.close()
    tiny_config.input.workers = 0
    # Each epoch is a new order of the same examples, augmented anew.
    labels = [np.concatenate([b["label"].ravel() for b in run[i:i + 5]]) for i in (0, 7)]
    assert not np.array_equal(labels[0], labels[1])
    tiny_config.train.seed = 1
    other = take(input_pipeline.train_batches(dataset, tiny_config, shards, 4), 1)
    assert not np.array_equal(other[0]["label"], run[0]["label"])


def test_an_epoch_reads_each_example_of_a_device_shard_once(tiny_config):
    """Without augmentation the images identify the records: over the 7 steps of an epoch,
    device 1 sees 28 distinct examples of its 28-record shard (112 / 4)."""
    tiny_config.input.augment = False
    dataset = input_pipeline.get_dataset(tiny_config.dataset)
    batches = take(input_pipeline.train_batches(dataset, tiny_config, [1], 4), 7)
    seen = {b["image"][0, r].tobytes() for b in batches for r in range(4)}
    assert len(seen) == 28


def test_each_process_reads_only_its_devices_shards_of_the_same_global_batch(tiny_config):
    """Two processes with two devices each get the halves of one process's 4-device batch."""
    dataset = input_pipeline.get_dataset(tiny_config.dataset)
    whole = take(input_pipeline.train_batches(dataset, tiny_config, [0, 1, 2, 3], 4, 5), 2)
    halves = [take(input_pipeline.train_batches(dataset, tiny_config, ids, 4, 5), 2)
              for ids in ([0, 1], [2, 3])]
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*halves)]
    assert_same_batches(joined, whole)


def test_evaluation_covers_every_example_exactly_once(tiny_config):
    dataset = input_pipeline.get_dataset(tiny_config.dataset)
    # 56 test examples in batches of 24: 3 batches, the last padded with 16 masked rows.
    batches, steps = input_pipeline.eval_batches(dataset, tiny_config, "test", 8, 24)
    got = list(batches)
    assert steps == len(got) == 3
    mask = np.concatenate([b["mask"].reshape(-1) for b in got])
    labels = np.concatenate([b["label"].reshape(-1) for b in got])
    assert mask.sum() == 56 and mask[:56].all() and not mask[56:].any()
    builder = tfds.builder(tiny_config.dataset.name, data_dir=tiny_config.dataset.data_dir)
    reference = [ex["label"] for ex in tfds.as_numpy(builder.as_dataset(split="test"))]
    np.testing.assert_array_equal(labels[:56], reference)


def test_missing_real_dataset_names_the_build_command(tmp_path):
    c = config_schema.defaults().dataset
    c.name = "synthetic_faces/tiny"
    c.data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"python -m data_prep.build --dataset="):
        input_pipeline.get_dataset(c, build_if_missing=False)
