"""fer_jax.input_benchmark: the profile of one core is the train pipeline's own work, and
`python -m fer_jax.benchmark --input=records --input_only` reports it (tiny records)."""
import numpy as np
import pytest

from fer_jax import benchmark, input_benchmark, input_pipeline

SHARDS = list(range(8))   # the 8 simulated devices of the test session (conftest)


@pytest.fixture(scope="module")
def tiny(tiny_data_dir):
    from tests.conftest import make_tiny_config
    config = make_tiny_config(tiny_data_dir)
    return config, input_pipeline.get_dataset(config.dataset)


def test_profile_builds_the_train_pipelines_batch_to_the_bit_and_times_every_stage(tiny):
    config, dataset = tiny
    p = input_benchmark.profile(dataset, config, SHARDS, len(SHARDS), steps=2)
    # Step 1's batch as the Grain map of training builds it (augmentation on).
    expected = input_pipeline._TrainStep(dataset, config, SHARDS, len(SHARDS))(1)
    assert sorted(p.last_batch) == sorted(expected)
    for key, value in expected.items():
        assert p.last_batch[key].dtype == value.dtype, key
        np.testing.assert_array_equal(p.last_batch[key], value, err_msg=key)
    assert p.images == 2 * config.train.batch_size
    assert tuple(p.ms) == input_benchmark.STAGE_NAMES
    # Every stage but the heatmap's share of the warp (a difference) takes time.
    assert all(v > 0 for k, v in p.ms.items() if k != "warp: heatmap"), p.ms
    assert p.cpu_ms_per_image > 0 and p.images_per_s_per_core > 0


def test_records_input_only_reports_images_per_s_and_the_profile_table(tiny, capsys):
    config, _ = tiny
    result = benchmark.measure(config, steps=1, repeats=1, num_classes=7, input_kind="records",
                               input_batches=2, profile_steps=1, input_only=True)
    table = capsys.readouterr().out
    for stage in input_benchmark.STAGE_NAMES:
        assert f"  {stage} " in table, stage
    assert set(result["input_profile_ms"]) == set(input_benchmark.STAGE_NAMES)
    assert result["input_images_per_s"] > 0
    assert result["input_images_per_s_per_core"] > 0
    assert result["input_workers"] == 0
    # No model was built: the training step's figures are null.
    assert result["step_ms_align"] is None and result["images_per_s_no_align"] is None
    assert set(benchmark.INPUT_KEYS) <= set(result)
