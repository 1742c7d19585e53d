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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
from etils import epath
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from fer_jax import alignment, capture, checkpoints, config_schema, data_parallel, methods
from fer_jax import models, optim, preemption, summaries

AXIS = data_parallel.AXIS

# Exit status of `fer_jax.main` when training stopped early with its state saved
# (preempted, or train.max_steps_per_run reached): run the same command again to
# continue. 75 is EX_TEMPFAIL of sysexits.h, "try again later".
RESTART_EXIT_CODE = 75


class TrainingIncomplete(Exception):
    """Training stopped before its last step; a checkpoint of `step` is saved."""

    def __init__(self, step: int, num_steps: int, reason: str, checkpoint_dir: str):
        self.step, self.num_steps, self.reason = step, num_steps, reason
        super().__init__(
            f"{reason}: stopped at step {step} of {num_steps} with a checkpoint of that step in "
            f"{checkpoint_dir}. Run the same command again to resume "
            f"(exit status {RESTART_EXIT_CODE} means exactly this).")


class TrainState(train_state.TrainState):
    batch_stats: Any = None


def create_train_state(model: models.contract.ExplainableModel, config: ml_collections.ConfigDict,
                       tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """Initialises parameters (and BatchNorm statistics) on the host."""
    variables = models.initial_variables(model, rng, config.dataset.image_size, train=False)
    if config.init_from:
        from fer_jax import weights  # only needed when starting from a file
        variables = weights.load_pretrained(variables, config.init_from, config.model.name,
                                            model.num_classes)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}))


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-sample softmax cross-entropy: (B, K), (B,) -> (B,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def wrapped_step(config: ml_collections.ConfigDict, dp: data_parallel.DataParallel,
                 align_weight: Optional[float] = None, donate_state: bool = True) -> Callable:
    """The training step as training runs it, placed by `dp` (pmap or shard_map):
    (replicated state, sharded batch) -> (state, metrics). The one place that binds
    `train_step` to a config (alignment, seed, CutMix), so that what benchmark.py times
    is what training runs. align_weight: override config.align.weight (benchmark's
    without-alignment case)."""
    weight = float(config.align.weight if align_weight is None else align_weight)
    return dp.wrap(functools.partial(
        train_step, align_layers=tuple(config.align.layers), align_weight=weight,
        seed=config.train.seed, batch_transform=methods.batch_transform(config)),
        donate_state=donate_state)


def train_step(state: TrainState, batch: Dict[str, jnp.ndarray], *,
               align_layers: Sequence[str], align_weight: float, seed: int = 0,
               batch_transform: Optional[methods.BatchTransform] = None,
               axis_name: Optional[str] = AXIS) -> Tuple[TrainState, Dict[str, jnp.ndarray]]:
    """One SGD step on this device's slice of the global batch.

    batch: image (b, S, S, 3), heatmap (b, S, S), valid (b,), label (b,),
    mask (b,). Loss = CE + align_weight * R (docs/method.md, "Alignment loss"); with align_weight 0
    no layer is captured and the step is plain cross-entropy.
    Dropout / stochastic depth draw from a key made of (seed, step, device
    index), so a resumed run draws what the uninterrupted one would.
    Training-time methods (docs/method.md, "Training-time methods"): the model
    gets the labels (ACoL erases by them) and ADL draws from the dropout key;
    CE also covers the extra logits a head sows (ACoL's second branch); a method's
    `batch_transform` (CutMix: methods.batch_transform(config)) changes the batch first
    and each CE is lam * CE(label) + (1 - lam) * CE(partner's label).
    Returns the new state and metrics summed over the global batch.
    """
    psum = (lambda x: jax.lax.psum(x, axis_name)) if axis_name else (lambda x: x)
    device = jax.lax.axis_index(axis_name) if axis_name else 0
    dropout_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), state.step),
                                     device)
    partners, lam = batch["label"], None
    if batch_transform is not None:
        batch, partners, lam = batch_transform(batch, seed, state.step, device)
    aligned = align_weight > 0 and len(align_layers) > 0
    mask = batch["mask"]
    count = jnp.maximum(psum(jnp.sum(mask)), 1.0)

    def classification_loss(logits):
        ce = cross_entropy(logits, batch["label"])
        if lam is not None:
            ce = lam * ce + (1.0 - lam) * cross_entropy(logits, partners)
        return jnp.sum(mask * ce) / count

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        mutable = ["batch_stats", methods.AUX_LOGITS] + (["intermediates"] if aligned else [])
        logits, new_vars = state.apply_fn(
            variables, batch["image"], train=True, labels=batch["label"], mutable=mutable,
            rngs={"dropout": dropout_key},
            capture_intermediates=capture.capture_filter(align_layers) if aligned else False)
        ce = sum(classification_loss(x) for x in
                 [logits] + jax.tree.leaves(new_vars.get(methods.AUX_LOGITS, {})))
        if aligned:
            feats = [capture.captured(new_vars["intermediates"], n) for n in align_layers]
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


def _write_scalars(writer: Optional[summaries.ScalarWriter], step: int,
                   scalars: Dict[str, float]) -> None:
    if writer is not None:
        writer.write(step, scalars)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
    """Trains as `config` says, checkpoints to `workdir`, writes results.json there.

    workdir: a local folder, or a URL (gs://bucket/run) that every host can reach.
    A run restarted on the same workdir resumes from its latest checkpoint and
    continues exactly as if it had not stopped (data order and dropout are
    functions of (seed, step)). With several processes every process calls
    this; process 0 alone writes results, pictures and TensorBoard.
    Returns the results dict (see evaluate.evaluate). Raises TrainingIncomplete
    after saving a checkpoint when a preemption notice (SIGTERM) arrives or
    train.max_steps_per_run steps are done.
    """
    from fer_jax import evaluate, input_pipeline, runs
    config_schema.validate(config)
    workdir = checkpoints.absolute(workdir)
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)   # may be gs:// (shared by pod hosts)
    is_main = jax.process_index() == 0
    dp = data_parallel.DataParallel(spmd=config.spmd)

    dataset = input_pipeline.get_dataset(config.dataset)
    class_names = dataset.class_names
    global_batch = config.train.batch_size
    steps_per_epoch = input_pipeline.steps_per_epoch(dataset, config)
    num_steps = max(1, int(round(config.train.num_epochs * steps_per_epoch)))

    model = models.create_model(config.model, len(class_names), bn_axis_name=AXIS)
    schedule = optim.learning_rate_schedule(config, steps_per_epoch, num_steps)
    tx = optim.create_optimizer(config, schedule)
    state = create_train_state(model, config, tx, jax.random.key(config.train.seed))
    size = config.dataset.image_size
    layers = capture.spatial_layers(
        model, {"params": state.params, "batch_stats": state.batch_stats}, (size, size, 3))
    capture.check_layers(config.align.layers, layers)
    capture.check_layers((model.cam_layer,), layers, key="model (cam_layer)")
    spec = evaluate.cam_spec(model, config.eval, layers)   # bad CAM names fail now, not later

    if is_main:
        _write_to(workdir, lambda local: [runs.write(
            local, config, class_names, model,
            record_size=dataset.image_size)])

    checkpoint_dir = os.path.join(workdir, "checkpoints")
    data_parallel.sync_processes("restore")
    manager = checkpoints.create_manager(checkpoint_dir, config.train)
    state = checkpoints.restore_latest(manager, state)
    start_step = int(state.step)
    if start_step and is_main:
        logging.info("Resuming from checkpoint at step %d.", start_step)
        print(f"Resumed from checkpoint at step {start_step} of {num_steps}.", flush=True)
    stop_step = num_steps
    if config.train.max_steps_per_run:
        stop_step = min(num_steps, start_step + config.train.max_steps_per_run)

    step_fn = wrapped_step(config, dp)
    batches = input_pipeline.train_batches(dataset, config, dp.shard_ids, dp.num_devices,
                                           start_step)
    writer = None
    if is_main:
        writer = summaries.ScalarWriter(os.path.join(workdir, "tensorboard"))
    pstate = dp.replicate(state)
    del state

    bar = tqdm(total=num_steps, initial=start_step, desc="train", unit="step",
               disable=not (is_main and config.train.progress_bar))
    history, t_start, trained, done = [], time.time(), 0, start_step
    t_compile_done, preempted = None, False
    with preemption.Watch() as watch:
        for step in range(start_step, stop_step):
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
                summary = {k: float(np.mean([dp.host_copy(m[k]) for m in history]))
                           for k in history[0]}
                summary["learning_rate"] = float(schedule(done))
                history = []
                bar.set_postfix(loss=f"{summary['loss']:.3f}", acc=f"{summary['accuracy']:.3f}")
                _write_scalars(writer, done, {f"train/{k}": v for k, v in summary.items()})
            # Every process gets the same answer at the same step (a collective decision).
            preempted = watch.reached(done)
            if done % config.train.checkpoint_every_steps == 0 or done == stop_step or preempted:
                checkpoints.save(manager, done, dp.host_copy(pstate))
            if preempted:
                break
    jax.block_until_ready(pstate)
    seconds = time.time() - t_start
    getattr(batches, "close", lambda: None)()   # stops the input's worker processes
    bar.close()
    manager.wait_until_finished()
    if preempted or done < num_steps:
        if writer is not None:
            writer.close()
        raise TrainingIncomplete(
            done, num_steps, "preempted (SIGTERM)" if preempted else
            f"train.max_steps_per_run={config.train.max_steps_per_run} steps done",
            checkpoint_dir)
    timed = time.time() - (t_compile_done or t_start)
    train_info = {
        "steps": num_steps, "steps_this_run": trained, "seconds": round(seconds, 2),
        # Throughput after the first (compiling) step of this run.
        "examples_per_second": round(steps_after_compile * global_batch / timed, 2)
        if t_compile_done and steps_after_compile else None,
    }

    results_path = os.path.join(workdir, evaluate.RESULTS)
    if trained == 0 and epath.Path(results_path).exists():
        # A finished run started again only re-evaluates: keep its training figures.
        train_info = json.loads(epath.Path(results_path).read_text()).get("train", train_info)
    # One host copy: pictures are computed by process 0 alone, on its own device.
    state = dp.host_copy(pstate)
    del pstate
    data_parallel.sync_processes("evaluate")
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    t_eval = time.time()
    results = evaluate.evaluate(model, variables, dataset, config, dp, class_names, layers, spec)
    results["train"] = train_info
    # The scores' cost beside training's (the pictures, a few seconds, come after).
    results["evaluation"] = {"seconds": round(time.time() - t_eval, 2)}
    results["config"] = config.to_dict()
    if is_main:
        _write_scalars(writer, num_steps, {
            "test/accuracy": results["accuracy"],
            **{f"test/att_cos/{k}": v for k, v in results["att_cos"].items()},
            **{f"test/{metric}/{m}": v for m, scores in results["cams"].items()
               for metric, v in scores.items()}})
        if writer is not None:
            writer.close()
        written = _write_to(workdir, lambda local: evaluate.write_outputs(
            results, model, variables, dataset, config, spec, local))
        print(f"Wrote {', '.join(os.path.basename(p) for p in written)}, checkpoints/ and "
              f"tensorboard/ in {workdir}.", flush=True)
    return results


def _write_to(workdir: str, write: Callable[[str], List[str]]) -> List[str]:
    """Runs write(folder) -> written paths on workdir itself, or, when workdir is a URL
    (gs://bucket/run: the local file APIs of JSON and matplotlib cannot reach it), on a
    local temporary folder whose files are then copied there."""
    if "://" not in workdir:
        return write(workdir)
    import tempfile
    with tempfile.TemporaryDirectory() as local:
        paths = write(local)
        for path in paths:
            epath.Path(path).copy(epath.Path(workdir) / os.path.basename(path), overwrite=True)
    return paths
