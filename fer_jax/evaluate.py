"""Test-set evaluation: accuracy, per class, confusion, ATT-COS, CAM-COS, pictures.

The per-device `eval_step` returns per-sample numbers; the host aggregates
them with the padding mask, so every test example counts exactly once.
"""
import functools
import os
from typing import Any, Dict, List, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fer_jax import alignment, cams, data_parallel, input_pipeline, plots


def reported_layers(spatial: Sequence[str], aligned: Sequence[str]) -> List[str]:
    """Top-level (B, H, W, C) layers plus any aligned nested ones, in model order.

    spatial: the model's (B, H, W, C) layers (alignment.spatial_layers).
    """
    top = [n for n in spatial if "/" not in n]
    return top + [n for n in aligned if n not in top]


def eval_step(state, batch, *, layers: Sequence[str], cam_layer: str, head_name: str
              ) -> Dict[str, Any]:
    """Per-sample predictions and cosines for one device's slice of the batch.

    Returns pred (b,), att_cos {layer: (b,)}, cam_cos {method: (b,)} for the
    CAM methods "cam", "gradcam", "gradcam++", "layercam" of the true class.
    """
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits, st = state.apply_fn(
        variables, batch["image"], train=False,
        capture_intermediates=alignment.capture_filter(tuple(layers)), mutable=["intermediates"])
    heat = batch["heatmap"]
    feats, grads, _ = cams.features_and_gradients(
        state.apply_fn, variables, batch["image"], cam_layer, batch["label"])
    maps = {"cam": cams.class_activation_map(feats, state.params[head_name]["kernel"],
                                              batch["label"])}
    maps.update({name: fn(feats, grads) for name, fn in cams.GRADIENT_CAMS.items()})
    return {
        "pred": jnp.argmax(logits, -1),
        "att_cos": {n: alignment.att_cos(alignment.captured(st["intermediates"], n), heat)
                    for n in layers},
        "cam_cos": {name: cams.cam_cos(m, heat) for name, m in maps.items()},
    }


def class_mean(values: np.ndarray, labels: np.ndarray, keep: np.ndarray,
               num_classes: int) -> Dict[int, float]:
    """Mean of `values` per class over samples where `keep`; classes with none omitted."""
    out = {}
    for k in range(num_classes):
        sel = keep & (labels == k)
        if sel.any():
            out[k] = float(values[sel].mean())
    return out


def cosine_score(values: np.ndarray, labels: np.ndarray, keep: np.ndarray,
                 num_classes: int) -> float:
    """method.md aggregation: per-class mean over valid samples, then the unweighted
    mean over the non-neutral classes (Neutral maps are always invalid)."""
    per_class = class_mean(values, labels, keep, num_classes)
    scores = [v for k, v in per_class.items() if k != 0]
    return float(np.mean(scores)) if scores else float("nan")


def evaluate(model, state, builder, config: ml_collections.ConfigDict,
             dp: data_parallel.DataParallel, class_names: Sequence[str],
             spatial: Sequence[str]) -> Dict[str, Any]:
    """Evaluates `state` on config.dataset.eval_split; returns the results dict.

    spatial: the model's (B, H, W, C) layer names, as alignment.spatial_layers gives.
    """
    split = config.dataset.eval_split
    layers = reported_layers(spatial, config.align.layers)
    step = dp.wrap(functools.partial(eval_step, layers=layers, cam_layer=model.cam_layer,
                                     head_name=model.head_name), replicated_out=False)
    local_batch = config.eval.batch_size // jax.process_count()
    batches, num_batches = input_pipeline.eval_batches(
        builder, config, split, dp.num_local_devices, local_batch)
    pstate = dp.replicate(state)
    parts: List[Dict[str, Any]] = []
    for batch in batches:
        out = dp.to_host(step(pstate, dp.shard(batch)))
        out.update({k: batch[k].reshape(-1) for k in ("label", "valid", "mask")})
        parts.append(out)
    merged = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
    merged = _gather_processes(merged)
    real = merged["mask"] > 0
    labels = merged["label"][real].astype(int)
    preds = merged["pred"][real].astype(int)
    valid = merged["valid"][real] > 0
    k = len(class_names)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, preds), 1)
    per_class = {class_names[c]: float(confusion[c, c] / confusion[c].sum())
                 for c in range(k) if confusion[c].sum()}
    return {
        "split": split,
        "num_examples": int(real.sum()),
        "num_valid_heatmaps": int(valid.sum()),
        "accuracy": float((labels == preds).mean()),
        "mean_class_accuracy": float(np.mean(list(per_class.values()))),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
        "aligned_layers": list(config.align.layers),
        "att_cos": {n: cosine_score(merged["att_cos"][n][real], labels, valid, k)
                    for n in layers},
        "cam_cos": {name: cosine_score(v[real], labels, valid, k)
                    for name, v in merged["cam_cos"].items()},
        "cam_layer": model.cam_layer,
    }


def _gather_processes(tree: Dict[str, Any]) -> Dict[str, Any]:
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils
    gathered = multihost_utils.process_allgather(tree)
    return jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), gathered)


def summary_line(results: Dict[str, Any]) -> str:
    """One line for the terminal: accuracy and the interpretability scores."""
    att = ", ".join(f"{n} {results['att_cos'][n]:.3f}" for n in results["aligned_layers"])
    return (f"{results['split']}: accuracy {results['accuracy']:.4f} "
            f"(mean class {results['mean_class_accuracy']:.4f}) | ATT-COS {att} | "
            f"CAM-COS {results['cam_cos']['cam']:.3f} (GradCAM {results['cam_cos']['gradcam']:.3f},"
            f" GradCAM++ {results['cam_cos']['gradcam++']:.3f}, LayerCAM "
            f"{results['cam_cos']['layercam']:.3f}) | {results['num_examples']} examples")


def write_pictures(model, state, builder, config: ml_collections.ConfigDict,
                   results: Dict[str, Any], workdir: str) -> List[str]:
    """attention.png (image, AU map, layer attention, CAM) and confusion.png in workdir."""
    paths = []
    class_names = results["class_names"]
    n = config.eval.num_plot_images
    if n > 0:
        size = config.dataset.image_size
        batches, _ = input_pipeline.eval_batches(
            builder, config, config.dataset.eval_split, 1, max(n, 1))
        batch = {k: v[0] for k, v in next(batches).items()}
        keep = batch["mask"] > 0
        batch = {k: v[keep] for k, v in batch.items()}
        layer = config.align.layers[0]
        maps = _picture_maps(model, state, batch, layer, size)
        path = os.path.join(workdir, "attention.png")
        plots.attention_grid(
            images=_denormalise(batch["image"]), heatmaps=batch["heatmap"],
            valid=batch["valid"] > 0, attention=np.asarray(maps["attention"]),
            cams=np.asarray(maps["cam"]), labels=batch["label"],
            preds=np.asarray(maps["pred"]), class_names=class_names,
            layer=layer, path=path)
        paths.append(path)
    path = os.path.join(workdir, "confusion.png")
    plots.confusion_matrix(np.array(results["confusion_matrix"]), class_names, path)
    paths.append(path)
    return paths


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _picture_maps_jit(model, variables, batch, layer, size):
    logits, st = model.apply(variables, batch["image"], train=False,
                             capture_intermediates=alignment.capture_filter(
                                 (layer, model.cam_layer)), mutable=["intermediates"])
    inter = st["intermediates"]
    pred = jnp.argmax(logits, -1)
    att = alignment.upsample_for_scoring(
        alignment.attention_map(alignment.captured(inter, layer)), (size, size))
    cam = cams.class_activation_map(alignment.captured(inter, model.cam_layer),
                                    variables["params"][model.head_name]["kernel"],
                                    batch["label"])
    return {"pred": pred, "attention": cams.min_max(att),
            "cam": cams.upsample_cam(cam, (size, size))}


def _picture_maps(model, state, batch, layer, size):
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return _picture_maps_jit(model, variables,
                             {"image": batch["image"], "label": batch["label"]}, layer, size)


def _denormalise(images: np.ndarray) -> np.ndarray:
    mean = np.array(input_pipeline.IMAGENET_MEAN, np.float32)
    std = np.array(input_pipeline.IMAGENET_STD, np.float32)
    return np.clip(images * std + mean, 0.0, 1.0)
