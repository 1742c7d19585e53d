"""Class activation maps and other explanations of any fer_jax model, by name.

  from fer_jax import cams
  spec = cams.spec_for(model, methods=("gradcam", "scorecam"), layers=("stage4",))
  maps = cams.explain(model, variables, images, classes, spec).maps  # {name: (B, H, W)}

Any other Flax linen module, its layers named by module path (fer_jax.cams.any_module):

  maps = cams.explain_module(module, variables, images, classes, target_layers=["layer4"],
                             methods=["gradcam", "eigencam"])

Methods (`cams.REGISTRY`, one module per family): cam (head), wildcat, acol,
prm, tscam (builtin: maps of training-time heads), gradcam, gradcam++, xgradcam,
hirescam, layercam (gradient), scorecam (score), eigencam (eigen), rollout,
cls_attention (attention, ViT), random, centre (reference).
"""
# Registration order is the order of reports and of "all": the paper's methods first.
from fer_jax.cams import head, builtin, gradient, score, eigen, attention, reference  # noqa: F401,I001
from fer_jax.cams.base import REGISTRY, CamMethod, applicable, select  # noqa: F401
from fer_jax.cams.builtin import builtin_method  # noqa: F401
from fer_jax.cams.engine import CamSpec, Explanation, explain, spec_for  # noqa: F401
from fer_jax.cams.any_module import explain_module, module_layers, module_methods  # noqa: F401
from fer_jax.models.contract import ModelView  # noqa: F401  (what the engine reads of a model)
