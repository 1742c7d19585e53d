"""Evaluation of a trained model, at the end of training or on a finished run.

For one split: accuracy (also per class, confusion), ATT-COS of every
top-level layer, and for every selected CAM method (fer_jax.cams) its CAM-COS,
AU pointing game and deletion / insertion AUC. Writes results.json, report.md
and the pictures (attention.png, cams_<method>.png, confusion.png).

The per-device `eval_step` returns per-sample numbers; the host aggregates
them with the padding mask, so every example counts exactly once.

  python -m fer_jax.evaluate --workdir=RUN [--split=test] [--output=DIR]
      [--config.eval.cam_methods=a,b] [--config.eval.cam_layers=stage3,stage4]
      [--config.dataset.data_dir=DIR] [--config.KEY=VALUE ...]

`--config.KEY=VALUE` overrides the run's own config (its run.json), as in fer_jax.main.
"""
import functools
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from fer_jax import alignment, cams, capture, config_schema, data_parallel, datasets
from fer_jax import input_pipeline
from fer_jax import maps, plots, report
from fer_jax.metrics import aggregate, classification, faithfulness, localisation
from fer_jax.models.contract import ExplainableModel

RESULTS = "results.json"


def reported_layers(spatial: Sequence[str], aligned: Sequence[str]) -> List[str]:
    """Top-level (B, H, W, C) layers plus any aligned nested ones, in model order.

    spatial: the model's (B, H, W, C) layers (capture.spatial_layers).
    """
    top = [n for n in spatial if "/" not in n]
    return top + [n for n in aligned if n not in top]


def cam_spec(model: ExplainableModel, eval_config: ml_collections.ConfigDict,
             spatial: Mapping[str, Any]) -> cams.CamSpec:
    """The checked CamSpec of config.eval (methods, layers, smoothing)."""
    return cams.spec_for(model, eval_config.cam_methods, eval_config.cam_layers,
                         eval_config.aug_smooth, eval_config.eigen_smooth,
                         eval_config.score_cam_batch, available_layers=spatial)


def eval_step(variables: Mapping[str, Any], batch: Dict[str, jnp.ndarray], *,
              model: ExplainableModel, att_layers: Sequence[str], spec: cams.CamSpec
              ) -> Dict[str, Any]:
    """Per-sample predictions and AU scores for one device's slice of the batch.

    batch: image (b, S, S, 3), heatmap (b, S, S), label (b,), index (b,).
    Returns pred (b,), att_cos {layer: (b,)}, and cam_cos, pointing {method: (b,)}
    for the maps of the true class (the methods spec computes).
    """
    images, heat, labels = batch["image"], batch["heatmap"], batch["label"]
    explained = cams.explain(model, variables, images, labels, spec,
                             sample_ids=batch["index"], extra_layers=att_layers)
    computed = {m: explained.maps[m] for m in spec.computed}
    return {
        "pred": jnp.argmax(explained.probe.logits, -1),
        "att_cos": {n: alignment.att_cos(explained.probe.features[n], heat) for n in att_layers},
        "cam_cos": {m: localisation.cam_cos(v, heat) for m, v in computed.items()},
        "pointing": {m: localisation.pointing_hits(v, heat) for m, v in computed.items()},
    }


def faithfulness_step(variables: Mapping[str, Any], batch: Dict[str, jnp.ndarray], *,
                      model: ExplainableModel, spec: cams.CamSpec, steps: int, insertion_blur: float
                      ) -> Dict[str, Any]:
    """Deletion and insertion AUC {method: (b,)} of the true class's maps (spec.computed).

    batch: image (b, S, S, 3) normalised, label (b,), index (b,) (the random map's seed).
    """
    images, labels = batch["image"], batch["label"]
    explained = cams.explain(model, variables, images, labels, spec, sample_ids=batch["index"])

    def class_probs(x: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
        return _class_probs(model.apply(variables, x, train=False), classes)

    stacked = jnp.stack([explained.maps[m] for m in spec.computed])
    deletion, insertion = faithfulness.curves(
        class_probs, images, stacked, labels, steps,
        start=faithfulness.insertion_start(images, insertion_blur),
        image_probs=_class_probs(explained.probe.logits, labels))
    return {"deletion_auc": dict(zip(spec.computed, faithfulness.auc(deletion))),
            "insertion_auc": dict(zip(spec.computed, faithfulness.auc(insertion)))}


def _class_probs(logits: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
    return capture.class_logit(jax.nn.softmax(logits.astype(jnp.float32)), classes)


def evaluate(model: ExplainableModel, variables: Mapping[str, Any],
             dataset: datasets.BuiltDataset,
             config: ml_collections.ConfigDict, dp: data_parallel.DataParallel,
             class_names: Sequence[str], spatial: Mapping[str, Any], spec: cams.CamSpec,
             split: Optional[str] = None, progress: bool = True) -> Dict[str, Any]:
    """Evaluates `variables` ({"params", "batch_stats"}) on a split; returns the results dict.

    spatial: the model's (B, H, W, C) layers, as capture.spatial_layers gives.
    spec: the CAM methods and layers, built once per run by cam_spec().
    Two passes: every example for accuracy, ATT-COS, CAM-COS and pointing; then
    deletion / insertion on the fixed subset of eval.faithfulness_examples examples
    (their images are kept from the first pass).
    """
    split = split or config.dataset.eval_split
    layers = reported_layers(list(spatial), config.align.layers)
    steps = int(config.eval.faithfulness_steps)
    show = progress and jax.process_index() == 0
    step = dp.wrap(functools.partial(eval_step, model=model, att_layers=tuple(layers), spec=spec),
                   replicated_out=False)
    local_batch = config.eval.batch_size // jax.process_count()
    batches, num_batches = input_pipeline.eval_batches(
        dataset, config, split, dp.num_local_devices, local_batch)
    # Each example's position in the split: the seed of its `random` map, whatever the
    # number of processes (padding rows get positions past the end, and are masked).
    ranges = input_pipeline.process_ranges(dataset, split)
    first_index, local_count = ranges[jax.process_index()]
    total = sum(count for _, count in ranges)
    subset = faithfulness.subset_positions(total, int(config.eval.faithfulness_examples))
    keep = np.zeros(total, bool)
    keep[subset] = True
    pvars = dp.replicate(variables)
    parts: List[Dict[str, Any]] = []
    kept: List[Dict[str, np.ndarray]] = []
    bar = tqdm(batches, total=num_batches, desc=f"evaluate {split}", unit="batch",
               disable=not show, leave=False)
    for i, batch in enumerate(bar):
        index = first_index + i * local_batch + np.arange(local_batch, dtype=np.int32)
        batch["index"] = index.reshape(batch["label"].shape)
        out = dp.to_host(step(pvars, dp.shard(batch)))
        out.update({k: batch[k].reshape(-1) for k in ("label", "valid", "mask")})
        parts.append(out)
        if steps:
            rows = (batch["mask"].reshape(-1) > 0) & keep[np.minimum(index, total - 1)]
            kept.append({k: batch[k].reshape((-1,) + batch[k].shape[2:])[rows]
                         for k in ("image", "label", "index")})
    merged = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
    if steps:
        merged.update(_faithfulness_pass(
            model, pvars, dp, spec, config.eval, kept, local_batch, ranges, keep, show))
    merged = _gather_processes(merged)
    real = merged["mask"] > 0
    labels = merged["label"][real].astype(int)
    valid = merged["valid"][real] > 0
    k = len(class_names)
    confusion = classification.confusion_matrix(labels, merged["pred"][real], k)
    per_method: Dict[str, Dict[str, float]] = {m: {} for m in spec.computed}
    for key in ("cam_cos", "pointing"):
        for m, values in merged[key].items():
            per_method[m][key] = aggregate.paper_score(values[real], labels, valid, k)
    if steps:
        faithful = merged["faithfulness_mask"] > 0
        for key in ("deletion_auc", "insertion_auc"):
            for m, values in merged[key].items():
                mean, half = aggregate.mean_ci95(values[faithful])
                per_method[m][key] = mean
                per_method[m][f"{key}_ci95"] = half
    same = dict(spec.same_as)
    for alias, original in same.items():
        per_method[alias] = dict(per_method[original])
    return {
        "split": split,
        "num_examples": int(real.sum()),
        "num_valid_heatmaps": int(valid.sum()),
        **classification.summary(confusion, class_names),
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
        "aligned_layers": list(config.align.layers),
        "att_cos": {n: aggregate.paper_score(merged["att_cos"][n][real], labels, valid, k)
                    for n in layers},
        "cam_layer": model.cam_layer,
        "cam_layers": list(spec.layers),
        "cam_methods": list(spec.methods),
        "same_maps": same,
        "cam_options": {"aug_smooth": spec.aug_smooth, "eigen_smooth": spec.eigen_smooth},
        "faithfulness_steps": steps,
        "faithfulness": {
            "steps": steps,
            "examples": int(merged["faithfulness_mask"].sum()) if steps else 0,
            "of": total,
            "subset": ("every example" if len(subset) == total else
                       f"fixed random subset (seed {faithfulness._SUBSET_SEED})"),
            "insertion_blur": float(config.eval.insertion_blur),
        },
        "cams": {m: per_method[m] for m in spec.methods},
    }


def _faithfulness_pass(model: ExplainableModel, pvars: Any, dp: data_parallel.DataParallel,
                       spec: cams.CamSpec, eval_config: ml_collections.ConfigDict,
                       kept: List[Dict[str, np.ndarray]], local_batch: int,
                       ranges: Sequence[Tuple[int, int]], keep: np.ndarray, show: bool
                       ) -> Dict[str, Any]:
    """Deletion / insertion AUCs of this process's kept examples, in batches of local_batch.

    Every process runs the same number of batches (the largest share of the subset;
    the rest padded, faithfulness_mask 0), as collectives of several processes need.
    """
    step = dp.wrap(functools.partial(faithfulness_step, model=model, spec=spec,
                                     steps=int(eval_config.faithfulness_steps),
                                     insertion_blur=float(eval_config.insertion_blur)),
                   replicated_out=False)
    ours = {k: np.concatenate([p[k] for p in kept]) for k in ("image", "label", "index")}
    n = len(ours["label"])
    most = max(int(keep[first:first + count].sum()) for first, count in ranges)
    num_batches = -(-most // local_batch)
    padded = num_batches * local_batch
    pad = {k: np.zeros((padded - n,) + v.shape[1:], v.dtype) for k, v in ours.items()}
    ours = {k: np.concatenate([v, pad[k]]) for k, v in ours.items()}
    ours["index"][n:] = len(keep) + np.arange(padded - n)   # past the end, like eval padding
    devices = dp.num_local_devices
    out: List[Dict[str, Any]] = []
    for i in tqdm(range(num_batches), desc="deletion/insertion", unit="batch",
                  disable=not show, leave=False):
        rows = slice(i * local_batch, (i + 1) * local_batch)
        batch = {k: v[rows].reshape((devices, -1) + v.shape[1:]) for k, v in ours.items()}
        out.append(dp.to_host(step(pvars, dp.shard(batch))))
    merged = (jax.tree.map(lambda *xs: np.concatenate(xs), *out) if out else
              {"deletion_auc": {}, "insertion_auc": {}})
    merged["faithfulness_mask"] = (np.arange(padded) < n).astype(np.float32)
    return merged


def _gather_processes(tree: Dict[str, Any]) -> Dict[str, Any]:
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils
    gathered = multihost_utils.process_allgather(tree)
    return jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), gathered)


def summary_line(results: Dict[str, Any]) -> str:
    """One line for the terminal: accuracy, ATT-COS of the aligned layers, every CAM-COS."""
    att = ", ".join(f"{n} {results['att_cos'][n]:.3f}" for n in results["aligned_layers"]
                    if n in results["att_cos"])
    same = results.get("same_maps", {})
    cam = ", ".join(f"{m} {v['cam_cos']:.3f}" for m, v in results["cams"].items()
                    if m not in same)
    return (f"{results['split']}: accuracy {results['accuracy']:.4f} "
            f"(mean class {results['mean_class_accuracy']:.4f}) | ATT-COS {att} | "
            f"CAM-COS {cam} | {results['num_examples']} examples")


def write_pictures(model: ExplainableModel, variables: Mapping[str, Any],
                   dataset: datasets.BuiltDataset,
                   config: ml_collections.ConfigDict, results: Dict[str, Any], outdir: str,
                   spec: cams.CamSpec) -> List[str]:
    """attention.png, cams_<method>.png (one per method) and confusion.png in `outdir`.

    The maps come from the same engine as the scores (fer_jax.cams.explain).
    """
    paths = []
    class_names = results["class_names"]
    n = config.eval.num_plot_images
    if n > 0:
        batches, _ = input_pipeline.eval_batches(dataset, config, results["split"], 1, n)
        batch = {k: v[0] for k, v in next(batches).items()}
        keep = batch["mask"] > 0
        batch = {k: v[keep] for k, v in batch.items()}
        layer = config.align.layers[0]
        maps_, attention, preds = _picture_maps(model, variables, batch["image"], batch["label"],
                                                spec, layer)
        images = input_pipeline.denormalise(batch["image"])
        common = dict(heatmaps=batch["heatmap"], valid=batch["valid"] > 0,
                      labels=batch["label"], preds=preds, class_names=class_names)
        first = spec.methods[0]
        path = os.path.join(outdir, "attention.png")
        plots.overlay_grid(images, [(f"attention ({layer})", attention),
                                    (f"{first} (true class)", maps_[first])], path=path, **common)
        paths.append(path)
        for method in spec.computed:   # a merged copy's picture would be its original's
            path = os.path.join(outdir, f"cams_{method}.png")
            title = (f"{method} at {', '.join(spec.layers)}" if cams.REGISTRY[method].source
                     == cams.base.PER_LAYER else method)
            plots.overlay_grid(images, [(f"{method} (true class)", maps_[method])], path=path,
                               title=title, **common)
            paths.append(path)
    path = os.path.join(outdir, "confusion.png")
    plots.confusion_matrix(np.array(results["confusion_matrix"]), class_names, path)
    paths.append(path)
    return paths


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _picture_maps_jit(model, variables, images, labels, spec, layer):
    explained = cams.explain(model, variables, images, labels, spec, extra_layers=(layer,))
    size = images.shape[1:3]
    att = maps.upsample_attention(maps.channel_mean(explained.probe.features[layer]), size)
    return explained.maps, maps.min_max(att), jnp.argmax(explained.probe.logits, -1)


def _picture_maps(model, variables, images, labels, spec, layer):
    out = _picture_maps_jit(model, variables, jnp.asarray(images), jnp.asarray(labels), spec,
                            layer)
    return jax.tree.map(np.asarray, out)


def write_outputs(results: Dict[str, Any], model: ExplainableModel, variables: Mapping[str, Any],
                  dataset: datasets.BuiltDataset, config: ml_collections.ConfigDict,
                  spec: cams.CamSpec, outdir: str) -> List[str]:
    """results.json, report.md and the pictures in `outdir`; prints the summary. Process 0 only."""
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, RESULTS)
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=_jsonable)
    written = [path, report.write(results, os.path.join(outdir, "report.md"))]
    written += write_pictures(model, variables, dataset, config, results, outdir, spec)
    print(summary_line(results), flush=True)
    return written


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def evaluate_run(workdir: str, split: Optional[str] = None, output: Optional[str] = None,
                 overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Evaluates the latest checkpoint of a (finished or interrupted) run, without training.

    overrides: {"eval.cam_methods": (...), "dataset.data_dir": ..., ...} applied to
    the run's config (a key it lacks is a ConfigError naming the valid ones). Writes
    results.json, report.md and pictures to `output` (default: the workdir; an existing
    results.json there keeps its `train`).
    """
    from fer_jax import runs
    workdir = os.path.abspath(os.path.expanduser(workdir))
    config = runs.read(workdir)["config"]
    from fer_jax import cli
    config_schema.validate(cli.apply_overrides(config, overrides or {}))
    dataset = input_pipeline.get_dataset(config.dataset, build_if_missing=False)
    restored = runs.restore(workdir)
    spatial = capture.spatial_layers(restored.model, restored.variables,
                                     (config.dataset.image_size,) * 2 + (3,))
    dp = data_parallel.DataParallel(spmd=config.spmd)
    spec = cam_spec(restored.model, config.eval, spatial)
    results = evaluate(restored.model, restored.variables, dataset, config, dp,
                       restored.class_names, spatial, spec, split=split)
    results["checkpoint_step"] = restored.step
    outdir = os.path.abspath(os.path.expanduser(output or workdir))
    old = os.path.join(outdir, RESULTS)
    if os.path.exists(old):
        with open(old) as f:
            previous = json.load(f)
        if "train" in previous:
            results["train"] = previous["train"]
    results["config"] = config.to_dict()
    if jax.process_index() == 0:
        written = write_outputs(results, restored.model, restored.variables, dataset, config,
                                spec, outdir)
        print(f"Wrote {', '.join(os.path.basename(p) for p in written)} in {outdir}.", flush=True)
    return results


def main(argv: Sequence[str]) -> None:
    from absl import flags
    from fer_jax import cli
    cli.start(argv)
    FLAGS = flags.FLAGS
    with cli.user_errors():
        evaluate_run(FLAGS.workdir, FLAGS.split, FLAGS.output, cli.overrides())


def _define_flags() -> None:
    from absl import flags
    from fer_jax import cli
    flags.DEFINE_string("workdir", None, "The run to evaluate (its run.json and checkpoints/).")
    flags.DEFINE_string("split", None, "Split to evaluate (default: the run's eval_split).")
    flags.DEFINE_string("output", None, "Where results.json, report.md and pictures go "
                        "(default: the workdir).")
    cli.define_config_overrides(
        "Overrides of the run's config, e.g. --config.eval.cam_methods=all (every method "
        "that applies; 'paper': the paper's maps and the reference rows; known: "
        f"{', '.join(cams.REGISTRY)}), --config.eval.cam_layers=stage3,stage4, "
        "--config.eval.faithfulness_steps=0, --config.dataset.data_dir=DIR (if it moved).")
    flags.mark_flags_as_required(["workdir"])


if __name__ == "__main__":
    from fer_jax import cli
    _define_flags()
    cli.run(main)
