"""Each training-time CAM method trains on the tiny synthetic faces and fer_jax.evaluate scores
its built-in map, through the same train_step and evaluate calls as fer_jax.main.

Kept to one compact test (width 2, 32 px, 2 steps, 2 faithfulness steps, one CAM
method) because the suite must stay within minutes on 2 cores. Parameters come
from NumPy (test_wsol.random_variables): compiling `model.init` costs a minute there.
"""

import jax
import numpy as np
import optax
import pytest

import conftest
from configs import recipes
from fer_jax import cams, capture, config_schema, data_parallel, evaluate, input_pipeline, models
from fer_jax import train
from test_wsol import random_variables

# Each backend and compute dtype is exercised by some method, at no extra cost.
VARIANTS = {  # method: (spmd, dtype)
    "wildcat": (False, "bfloat16"), "acol": (True, "float32"), "prm": (False, "float32"),
    "adl": (False, "bfloat16"), "cutmix": (True, "float32"), "tscam": (False, "bfloat16"),
}


@pytest.mark.parametrize("method", recipes.TRAINING_TIME_METHODS)
def test_method_trains_and_evaluate_scores_its_built_in_map(method, tiny_data_dir):
    config = recipes.with_method(conftest.make_tiny_config(tiny_data_dir), method)
    config.spmd, config.model.dtype = VARIANTS[method]
    config.model.width = 2
    config.eval.faithfulness_steps = 2
    if method == "tscam":
        config.model.name, config.model.vit_pos_size = "vit_micro_patch8", 32
        config.align.layers = ("block5",)
    dataset = input_pipeline.get_dataset(config.dataset)
    classes = dataset.class_names
    model = models.create_model(config.model, len(classes), bn_axis_name=data_parallel.AXIS)
    builtin = cams.builtin_method(model)
    assert builtin == {"adl": "cam", "cutmix": "cam"}.get(method, method)
    assert builtin in cams.applicable(model)          # eval.cam_methods=() ("all") includes it
    config.eval.cam_methods = (builtin,)
    config_schema.validate(config)

    v = random_variables(model, (1, 32, 32, 3))
    state = train.TrainState.create(apply_fn=model.apply, params=v["params"],
                                    batch_stats=v.get("batch_stats", {}), tx=optax.adam(1e-3))
    dp = data_parallel.DataParallel(spmd=config.spmd)
    step = train.wrapped_step(config, dp, donate_state=False)
    # The train split's first batches, unaugmented (augmentation is input_pipeline's test).
    batches, _ = input_pipeline.eval_batches(dataset, config, "train", dp.num_local_devices,
                                             config.train.batch_size)
    pstate = dp.replicate(state)
    for _ in range(2):
        pstate, metrics = step(pstate, dp.shard(next(batches)))
    metrics, trained = dp.host_copy(metrics), dp.host_copy(pstate)
    assert np.isfinite(metrics["loss"]) and metrics["ce"] > 0 and metrics["align"] > 0
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(trained.params),
                                                      jax.tree.leaves(state.params)))

    variables = {"params": trained.params, "batch_stats": trained.batch_stats}
    spatial = capture.spatial_layers(model, variables, (32, 32, 3))
    results = evaluate.evaluate(model, variables, dataset, config, dp, classes, spatial,
                                evaluate.cam_spec(model, config.eval, spatial), progress=False)
    assert results["num_examples"] == 56 and results["cam_methods"] == [builtin]
    scores = results["cams"][builtin]
    assert set(scores) == {"cam_cos", "pointing", "deletion_auc", "insertion_auc",
                           "deletion_auc_ci95", "insertion_auc_ci95"}
    assert all(0.0 <= s <= 1.0 for s in scores.values()), scores
