"""Training-time CAM methods, one module each; `REGISTRY` is the one list of their names.

  from fer_jax import methods
  methods.REGISTRY["wildcat"].options    # its config fields
  methods.switch_on(config, "adl")        # what configs/recipes.with_method does

A new method is one module that registers a `Method` (fer_jax.methods.base; README,
"Extending fer_jax"), imported here or by the code that uses it.
"""
# Registration order is the order of the paper's table rows and of the config fields.
from fer_jax.methods import wildcat, acol, prm, adl, cutmix, tscam  # noqa: F401,I001
from fer_jax.methods.base import (  # noqa: F401
    AUX_LOGITS, REGISTRY, BatchTransform, Insert, Method, Option, Options, TrainingHead,
    batch_transform, get, heads, make_head, paper_methods, register, switch_on)

__all__ = ["wildcat", "acol", "prm", "adl", "cutmix", "tscam", "AUX_LOGITS", "REGISTRY",
           "BatchTransform", "batch_transform", "Insert", "Method", "Option", "Options",
           "TrainingHead", "get", "heads", "make_head",
           "paper_methods", "register", "switch_on"]
