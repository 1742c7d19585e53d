"""Converts a timm `.safetensors`, Google ViT/AugReg `.npz` or Keras mini-Xception `.hdf5`
file once into fer_jax's format.

  python -m fer_jax.convert_weights --model=resnet50 --input=resnet50.safetensors \
      --output=weights/ --num_classes=7 [--image_size=224] [--vit_head=gap] [--list_loaded]
  python -m fer_jax.convert_weights --model=apvit --input=backbone_ir50_ms1m_epoch120.pth \
      --input=vit_small_p16_224-15ec54c9.pth --output=weights/ --num_classes=7 --image_size=112

`--input` may be given more than once: the files' tensors are merged (their keys must
not overlap), as APViT's face.evoLVe IR-50 and timm ViT files.

Writes `OUTPUT/{model}_{num_classes}cls.npz` (see `fer_jax.weights.save`: an
uncompressed npz of 'params/...' and 'batch_stats/...' arrays) and prints what it
did: loaded, re-initialised (the head, when the class count differs), resampled
and skipped tensors. Point `config.init_from` at the written file (or directly at
the original one: both load through `fer_jax.weights.load_pretrained`).
"""
import argparse
import os
import sys
from typing import Any, Dict, Optional, Sequence, Union

import jax

from fer_jax import config_schema, models, weights
from fer_jax.models import registry


def convert_file(model_name: str, input_path: Union[str, Sequence[str]], output_dir: str,
                 num_classes: int, image_size: int = 224, vit_head: str = "", seed: int = 0,
                 list_loaded: bool = False) -> str:
    """Converts `input_path` (one path, or several whose tensors are merged) for the
    backbone `model_name`; returns the written file's path.

    image_size: ViT/APViT pretraining size kept in the file (pos_embed grid = image_size /
    patch); ignored for ResNets, whose parameters do not depend on it.
    vit_head: "" = the family's first head (ViT: "gap", APViT: "token").
    """
    family = registry.get(model_name, what="--model").family
    paths = [input_path] if isinstance(input_path, str) else list(input_path)
    tensors: Dict[str, Any] = {}
    for path in paths:   # first: a bad path fails before the slow init
        for key, value in weights.read_tensors(path).items():
            if key in tensors:
                raise ValueError(f"{path!r}: tensor {key!r} is also in an earlier --input")
            tensors[key] = value
    # The model as its family builds it from a config: settings that do not change the
    # parameters (large maps, dtype) stay at their defaults.
    model_config = config_schema.defaults().model
    model_config.name, model_config.vit_pos_size = model_name, image_size
    if family.head_key == "model.vit_head":
        model_config.vit_head = vit_head or family.heads[0]
    model = models.create_model(model_config, num_classes)
    variables = models.initial_variables(model, jax.random.PRNGKey(seed), image_size)
    new, report = weights.convert(variables, tensors, paths[0], model_name, num_classes)
    output = os.path.join(output_dir, f"{model_name}_{num_classes}cls.npz")
    weights.save(new, output, model_name)
    print(f"{' + '.join(paths)} -> {output} ({model_name}, {num_classes} classes)")
    print(report.summary(list_loaded))
    return output


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_jax.convert_weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=f"one of {sorted(registry.BACKBONES)}")
    parser.add_argument("--input", required=True, action="append",
                        help="timm .safetensors, PyTorch .pth, Google .npz or Keras .hdf5 "
                             "(mini_xception) file; repeat it to merge files (APViT: the "
                             "IR-50 .pth and the ViT file)")
    parser.add_argument("--output", required=True, help="folder for the converted .npz")
    parser.add_argument("--num_classes", type=int, required=True, help="classes of the new head")
    parser.add_argument("--image_size", type=int, default=224,
                        help="ViT/APViT only: size whose patch grid the stored pos_embed gets "
                             "(APViT: 112)")
    parser.add_argument("--vit_head", choices=("gap", "token"), default="",
                        help="ViT only: head type (does not change the parameters; default: "
                             "the family's first, 'gap' for ViT, 'token' for APViT)")
    parser.add_argument("--list_loaded", action="store_true",
                        help="also print every loaded model path")
    args = parser.parse_args(argv)
    try:
        convert_file(args.model, args.input, args.output, args.num_classes, args.image_size,
                     args.vit_head, list_loaded=args.list_loaded)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
