"""Train state, the per-device train step, and the training loop.

`train_step` is written once, per device, with collectives over
`data_parallel.AXIS`: the loss of each device is its share of the *global*
batch loss (sums divided by global counts), so summing gradients over devices
gives exactly the gradient of one device on the whole batch.
"""
import functools
import json
import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from absl import logging
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from fer_jax import alignment, checkpoints, config_schema, data_parallel, evaluate, models
from fer_jax import input_pipeline, optim

AXIS = data_parallel.AXIS


class TrainState(train_state.TrainState):
    batch_stats: Any = None


def create_train_state(model: nn.Module, config: ml_collections.ConfigDict,
                       tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """Initialises parameters (and BatchNorm statistics) on the host."""
    size = config.dataset.image_size
    variables = jax.jit(functools.partial(model.init, train=False))(
        rng, jnp.zeros((1, size, size, 3), jnp.float32))
    if config.init_from:
        from fer_jax import weights  # only needed when starting from a file
        variables = weights.load_pretrained(variables, config.init_from, config.model.name,
                                            model.num_classes)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}))


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-sample softmax cross-entropy: (B, K), (B,) -> (B,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def train_step(state: TrainState, batch: Dict[str, jnp.ndarray], *,
               align_layers: Sequence[str], align_weight: float, seed: int = 0,
               axis_name: Optional[str] = AXIS) -> Tuple[TrainState, Dict[str, jnp.ndarray]]:
    """One SGD step on this device's slice of the global batch.

    batch: image (b, S, S, 3), heatmap (b, S, S), valid (b,), label (b,),
    mask (b,). Loss = CE + align_weight * R (method.md); with align_weight 0
    no layer is captured and the step is plain cross-entropy.
    Dropout / stochastic depth draw from a key made of (seed, step, device
    index), so a resumed run draws what the uninterrupted one would.
    Returns the new state and metrics summed over the global batch.
    """
    psum = (lambda x: jax.lax.psum(x, axis_name)) if axis_name else (lambda x: x)
    device = jax.lax.axis_index(axis_name) if axis_name else 0
    dropout_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), state.step),
                                     device)
    aligned = align_weight > 0 and len(align_layers) > 0
    mask = batch["mask"]
    count = jnp.maximum(psum(jnp.sum(mask)), 1.0)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        mutable = ["batch_stats", "intermediates"] if aligned else ["batch_stats"]
        logits, new_vars = state.apply_fn(
            variables, batch["image"], train=True, mutable=mutable,
            rngs={"dropout": dropout_key},
            capture_intermediates=alignment.capture_filter(align_layers) if aligned else False)
        ce = jnp.sum(mask * cross_entropy(logits, batch["label"])) / count
        if aligned:
            feats = [alignment.captured(new_vars["intermediates"], n) for n in align_layers]
            r = alignment.alignment_loss(feats, batch["heatmap"], batch["valid"] * mask,
                                         axis_name)
        else:
            r = jnp.zeros((), jnp.float32)
        return ce + align_weight * r, (logits, new_vars["batch_stats"], ce, r)

    grads, (logits, batch_stats, ce, r) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = psum(grads)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    correct = jnp.sum(mask * (jnp.argmax(logits, -1) == batch["label"]))
    metrics = {
        "ce": psum(ce), "align": psum(r), "loss": psum(ce + align_weight * r),
        "accuracy": psum(correct) / count,
    }
    return new_state, metrics


def _write_scalars(writer, step: int, scalars: Dict[str, float]) -> None:
    if writer is None:
        return
    import tensorflow as tf
    with writer.as_default():
        for k, v in scalars.items():
            tf.summary.scalar(k, v, step=step)
        writer.flush()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
    """Trains as `config` says, checkpoints to `workdir`, writes results.json there.

    A run restarted on the same workdir resumes from its latest checkpoint.
    Returns the results dict (see evaluate.evaluate).
    """
    config_schema.validate(config)
    input_pipeline.hide_accelerators_from_tf()
    workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    dp = data_parallel.DataParallel(spmd=config.spmd)

    builder = input_pipeline.get_builder(config.dataset)
    class_names = builder.info.features["label"].names
    num_train = input_pipeline.num_examples(builder, config.dataset.train_split)
    global_batch = config.train.batch_size
    steps_per_epoch = max(1, num_train // global_batch)
    num_steps = max(1, int(round(config.train.num_epochs * steps_per_epoch)))

    model = models.create_model(config.model, len(class_names), bn_axis_name=AXIS)
    schedule = optim.learning_rate_schedule(config, steps_per_epoch, num_steps)
    tx = optim.create_optimizer(config, schedule)
    state = create_train_state(model, config, tx, jax.random.key(config.train.seed))
    size = config.dataset.image_size
    layers = alignment.spatial_layers(
        model, {"params": state.params, "batch_stats": state.batch_stats}, (size, size, 3))
    alignment.check_layers(config.align.layers, layers)
    alignment.check_layers((model.cam_layer,), layers, key="model (cam_layer)")

    manager = checkpoints.create_manager(os.path.join(workdir, "checkpoints"), config.train)
    state = checkpoints.restore_latest(manager, state)
    start_step = int(state.step)
    if start_step and is_main:
        logging.info("Resuming from checkpoint at step %d.", start_step)
        print(f"Resumed from checkpoint at step {start_step} of {num_steps}.", flush=True)

    step_fn = dp.wrap(functools.partial(
        train_step, align_layers=tuple(config.align.layers),
        align_weight=float(config.align.weight)), donate_state=True)
    local_batch = global_batch // jax.process_count()
    batches = input_pipeline.train_batches(
        builder, config, dp.num_local_devices, local_batch,
        seed=config.train.seed * 1_000_003 + start_step)
    writer = None
    if is_main:
        import tensorflow as tf
        writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
    pstate = dp.replicate(state)
    del state

    bar = tqdm(total=num_steps, initial=start_step, desc="train", unit="step",
               disable=not (is_main and config.train.progress_bar))
    history, t_start, trained = [], time.time(), 0
    t_compile_done = None
    for step in range(start_step, num_steps):
        pstate, metrics = step_fn(pstate, dp.shard(next(batches)))
        history.append(metrics)
        trained += 1
        if t_compile_done is None:
            jax.block_until_ready(metrics)
            t_compile_done, steps_after_compile = time.time(), 0
        else:
            steps_after_compile += 1
        bar.update(1)
        done = step + 1
        if done % config.train.log_every_steps == 0 or done == num_steps:
            summary = {k: float(np.mean([np.asarray(dp.unreplicate(m[k])) for m in history]))
                       for k in history[0]}
            summary["learning_rate"] = float(schedule(done))
            history = []
            bar.set_postfix(loss=f"{summary['loss']:.3f}", acc=f"{summary['accuracy']:.3f}")
            _write_scalars(writer, done, {f"train/{k}": v for k, v in summary.items()})
        if done % config.train.checkpoint_every_steps == 0 or done == num_steps:
            checkpoints.save(manager, done, dp.unreplicate(pstate))
    jax.block_until_ready(pstate)
    seconds = time.time() - t_start
    bar.close()
    manager.wait_until_finished()
    timed = time.time() - (t_compile_done or t_start)
    train_info = {
        "steps": num_steps, "steps_this_run": trained, "seconds": round(seconds, 2),
        # Throughput after the first (compiling) step of this run.
        "examples_per_second": round(steps_after_compile * global_batch / timed, 2)
        if t_compile_done and steps_after_compile else None,
    }

    results_path = os.path.join(workdir, "results.json")
    if trained == 0 and os.path.exists(results_path):
        # A finished run started again only re-evaluates: keep its training figures.
        with open(results_path) as f:
            train_info = json.load(f).get("train", train_info)
    state = dp.unreplicate(pstate)
    results = evaluate.evaluate(model, state, builder, config, dp, class_names, layers)
    results["train"] = train_info
    results["config"] = config.to_dict()
    if is_main:
        _write_scalars(writer, num_steps, {
            "test/accuracy": results["accuracy"],
            **{f"test/att_cos/{k}": v for k, v in results["att_cos"].items()},
            **{f"test/cam_cos/{k}": v for k, v in results["cam_cos"].items()}})
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2, default=_jsonable)
        pictures = evaluate.write_pictures(model, state, builder, config, results, workdir)
        print(evaluate.summary_line(results), flush=True)
        print(f"Wrote {results_path}, "
              f"{', '.join(os.path.basename(p) for p in pictures)}, checkpoints/ and "
              "tensorboard/ there.", flush=True)
    return results


def _jsonable(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
