"""A trained model as a file that runs without fer_jax's training code (`jax.export`).

  python -m fer_jax.export [--workdir=RUN] --output=DIR [--cams=gradcam++,layercam]
      [--platforms=cpu,cuda] [--batch_size=N] [--saved_model]

Without --workdir it exports the model shipped in the package (fer_jax.pretrained.DEFAULT).
DIR gets
  model.jax      the serialised `jax.export` artifact (StableHLO) of predict's whole
                 inference function: (B, S, S, 3) float32 normalised faces ->
                 probabilities (B, K) and, per CAM method, the (B, S, S) map of the
                 predicted class in [0, 1]. The batch dimension is symbolic (any B >= 1;
                 --batch_size=N fixes it, which Score-CAM needs);
                 the parameters are constants inside; the gradient methods' backward pass
                 is part of the function. Lowered for every platform of --platforms.
  contract.json  how to feed it and read it: input size, channels, normalisation and
                 grey rule, the crop rule and crop side, class names, the AU codebook
                 entry of each class, the CAM methods and layers, output shapes,
                 fer_jax and jax versions.
  saved_model/   with --saved_model: the same function as a TF SavedModel (jax2tf,
                 signature `serving_default`), for TF Serving; needs TensorFlow here only.

`fer_jax.serving.load(DIR)` runs it with jax and NumPy alone.
"""
import functools
import json
import os
import sys
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from data_prep import codebook
from fer_jax import cams, errors, predict, pretrained, runs, serving
from fer_jax.cams import base as cam_base

DEFAULT_PLATFORMS = ("cpu", "cuda")   # runs on a laptop and on an NVIDIA server alike
SAVED_MODEL = "saved_model"


def default_methods(model: Any) -> Tuple[str, ...]:
    """The paper's gradient CAM methods that apply to `model` (registry order)."""
    return tuple(n for n in cam_base.paper_methods(model)
                 if cam_base.GRADIENTS in cam_base.REGISTRY[n].needs)


def inference_function(restored: runs.Restored, methods: Sequence[str] = (),
                       cam_layers: Sequence[str] = ()
                       ) -> Tuple[Callable[[jnp.ndarray], Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]],
                                  cams.CamSpec]:
    """predict's inference (fer_jax.predict._infer) with the variables bound, and its spec.

    methods: CAM registry names (() = default_methods); cam_layers: () = the model's.
    The function maps (B, S, S, 3) float32 normalised faces to probabilities (B, K) and
    {method: (B, S, S) map of the predicted class in [0, 1]}, methods in the given order.
    """
    model = restored.model
    spec = cams.spec_for(model, tuple(methods) or default_methods(model), cam_layers,
                         key="export")
    aligned = tuple(restored.config.align.layers)
    infer = functools.partial(predict._infer, model, spec, aligned[0] if aligned else model.cam_layer,
                              int(restored.config.dataset.image_size), restored.variables)

    def function(images: jnp.ndarray) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
        probabilities, _, maps, _, _ = infer(images)
        return probabilities, {m: maps[m] for m in spec.methods}

    return function, spec


def export_function(function: Callable, image_size: int,
                    platforms: Sequence[str] = DEFAULT_PLATFORMS,
                    batch_size: Optional[int] = None) -> jax.export.Exported:
    """`function` lowered for (B, S, S, 3) float32 inputs on `platforms`; B symbolic
    ("b", any B >= 1) unless batch_size fixes it."""
    b = jax.export.symbolic_shape("b")[0] if batch_size is None else int(batch_size)
    spec = jax.ShapeDtypeStruct((b, image_size, image_size, 3), jnp.float32)
    return jax.export.export(jax.jit(function), platforms=tuple(platforms))(spec)


def contract(restored: runs.Restored, spec: cams.CamSpec, platforms: Sequence[str],
             source: str, batch_size: Optional[int] = None) -> Dict[str, Any]:
    """contract.json: everything a caller needs to feed the artifact and read its outputs."""
    s = int(restored.config.dataset.image_size)
    rule = restored.input_rule
    names = list(restored.class_names)
    return {
        "format": serving.FORMAT,
        "artifact": serving.ARTIFACT,
        "fer_jax_version": runs.version(),
        "jax_version": jax.__version__,
        "platforms": list(platforms),
        "source": source,
        "model": str(restored.config.model.name),
        "input": {
            "shape": [batch_size, s, s, 3], "dtype": "float32", "layout": "NHWC, RGB",
            "image_size": s, "channels": 3,
            "crop": rule.crop, "crop_size": int(restored.record_size),
            "grey": rule.grey, "mean": list(rule.mean), "std": list(rule.std),
            "rule": ("crop the face by `crop` (data_prep.faces) at crop_size, resize to "
                     "image_size (antialiased), scale to [0, 1]; if grey: luma "
                     "0.299 R + 0.587 G + 0.114 B in all three channels; then "
                     "(x - mean) / std per channel"),
        },
        "class_names": names,
        # The AU codebook has no version of its own: the entry of each class is written out.
        "au_codebook": {"version": None, "source": "data_prep.codebook",
                        "class_aus": {n: (list(codebook.class_aus(codebook.EXPRESSIONS.index(n)))
                                          if n in codebook.EXPRESSIONS else None)
                                      for n in names}},
        "outputs": {
            "probabilities": {"shape": [batch_size, len(names)], "dtype": "float32",
                              "meaning": "softmax over class_names"},
            "maps": {"methods": list(spec.methods), "layers": list(spec.layers),
                     "shape": [batch_size, s, s], "dtype": "float32", "range": [0.0, 1.0],
                     "meaning": "per method, the map of the predicted class (argmax)"},
        },
    }


def export_model(restored: runs.Restored, output: str, methods: Sequence[str] = (),
                 cam_layers: Sequence[str] = (), platforms: Sequence[str] = DEFAULT_PLATFORMS,
                 saved_model: bool = False, source: str = "", batch_size: Optional[int] = None
                 ) -> Dict[str, Any]:
    """Writes model.jax and contract.json (and saved_model/) into `output`; returns the
    contract. batch_size None: any batch size (symbolic)."""
    function, spec = inference_function(restored, methods, cam_layers)
    fixed = [m for m in spec.computed if cam_base.FORWARDS in cam_base.REGISTRY[m].needs]
    if batch_size is None and fixed:
        raise errors.ConfigError(
            f"export: {', '.join(fixed)} runs its masked forwards in chunks sized by the batch, "
            "which a symbolic batch cannot give: export with a fixed --batch_size=N")
    if batch_size is not None and batch_size < 1:
        raise errors.ConfigError(f"export: batch_size={batch_size}; expected >= 1")
    s = int(restored.config.dataset.image_size)
    exported = export_function(function, s, platforms, batch_size)
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, serving.ARTIFACT), "wb") as f:
        f.write(exported.serialize())
    info = contract(restored, spec, platforms, source, batch_size)
    with open(os.path.join(output, serving.CONTRACT), "w") as f:
        json.dump(info, f, indent=2)
    if saved_model:
        write_saved_model(function, s, os.path.join(output, SAVED_MODEL), batch_size)
    return info


def write_saved_model(function: Callable, image_size: int, path: str,
                      batch_size: Optional[int] = None) -> None:
    """`function` as a TF SavedModel: jax2tf (native serialisation: the same StableHLO in an
    XlaCallModule op), batch dimension None (or batch_size). Signature `serving_default`: input `images`;
    outputs `probabilities` and one per CAM method, named after it."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    def flat(images: jnp.ndarray) -> Dict[str, jnp.ndarray]:   # a signature returns a flat dict
        probabilities, maps = function(images)
        return {"probabilities": probabilities, **maps}

    module = tf.Module()
    module.predict = tf.function(
        jax2tf.convert(flat, polymorphic_shapes=[f"({batch_size or 'b'}, {image_size}, "
                                                 f"{image_size}, 3)"], with_gradient=False),
        autograph=False,
        input_signature=[tf.TensorSpec([batch_size, image_size, image_size, 3], tf.float32,
                                      name="images")])
    tf.saved_model.save(module, path, signatures=module.predict)


def main(argv: Sequence[str]) -> None:
    from absl import flags
    from fer_jax import cli
    cli.start(argv)
    FLAGS = flags.FLAGS
    workdir = FLAGS.workdir or pretrained.path()
    source = (os.path.abspath(FLAGS.workdir) if FLAGS.workdir
              else f"fer_jax.pretrained/{pretrained.DEFAULT}")
    split = lambda v: tuple(x.strip() for x in (v or "").split(",") if x.strip())  # noqa: E731
    try:
        platforms = split(FLAGS.platforms)
        if not platforms:
            raise errors.ConfigError("--platforms: give at least one, e.g. cpu,cuda")
        info = export_model(runs.restore(workdir), FLAGS.output, split(FLAGS.cams),
                            split(FLAGS.cam_layers), platforms, FLAGS.saved_model,
                            source=source, batch_size=FLAGS.batch_size or None)
    except (errors.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"Exported {info['model']} ({len(info['class_names'])} classes, "
          f"{info['input']['image_size']} px; maps: {', '.join(info['outputs']['maps']['methods'])}"
          f"; platforms: {', '.join(platforms)}) to {FLAGS.output}"
          + (f" (and {SAVED_MODEL}/)" if FLAGS.saved_model else "")
          + ". Load it with fer_jax.serving.load.", flush=True)


def _define_flags() -> None:
    from absl import flags
    flags.DEFINE_string("workdir", None, "A training run (its run.json and checkpoints/); "
                        "without it: the shipped FER2013 mini-Xception.")
    flags.DEFINE_string("output", None, "Where model.jax and contract.json go.")
    flags.DEFINE_string("cams", None, "Comma-separated CAM methods whose maps the artifact "
                        "returns (default: the paper's gradient methods that apply); one of "
                        f"{', '.join(cam_base.REGISTRY)} or the sets {', '.join(cam_base.SETS)}.")
    flags.DEFINE_string("cam_layers", None, "Comma-separated layers of the CAMs (default: the "
                        "model's cam layer).")
    flags.DEFINE_string("platforms", ",".join(DEFAULT_PLATFORMS),
                        "Comma-separated platforms the artifact is lowered for (cpu, cuda, rocm, "
                        "tpu).")
    flags.DEFINE_integer("batch_size", 0, "A fixed batch size (Score-CAM needs one); 0: any "
                         "batch size (symbolic).")
    flags.DEFINE_boolean("saved_model", False, "Also write a TF SavedModel (needs TensorFlow).")
    flags.mark_flags_as_required(["output"])


if __name__ == "__main__":
    from fer_jax import cli
    _define_flags()
    cli.run(main)
