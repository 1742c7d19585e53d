"""The miniature paper: the demo's models on synthetic_faces/small, trained 30 epochs, long
enough for the models without AU guidance to learn the expressions too, so that both
columns of `paper_table_synthetic` (fer_jax.grids) compare trained models.
`configs/miniature_quick.py` is its 6-epoch variant (sweeps, ablations, a quick table).

  python -m fer_jax.main --config=configs/miniature.py --workdir=DIR           # ResNet-18/16
  python -m fer_jax.main --config=configs/miniature.py:wildcat --workdir=DIR   # + a method
The argument after ':' switches on one training-time method (recipes.TRAINING_TIME_METHODS);
a ViT-only method ('tscam') trains the synthetic ViT (configs/synthetic_vit.py) instead of
the ResNet. ':apvit' trains the miniature APViT (configs/synthetic_apvit.py), the paper's
APViT row.
"""
from configs import default, recipes, synthetic_apvit, synthetic_vit
from fer_jax import methods

APVIT = "apvit"   # the APViT row: a model, not a training-time method
# Every model of the table: by 30 epochs the ResNet without AU reaches 0.994 test accuracy,
# as the one with AU (0.746 after the demo's 12 epochs), the synthetic ViT 0.92 (README).
EPOCHS = 30.0


def uses_vit(method: str) -> bool:
    """Whether `method` trains the synthetic ViT: a method for ViTs alone (its record's
    families)."""
    return bool(method) and method != APVIT and methods.get(method).families == {"vit"}


def get_config(method: str = ""):
    if method == APVIT:
        c = synthetic_apvit.get_config()
    elif uses_vit(method):
        c = recipes.with_method(synthetic_vit.get_config(), method)
    else:
        c = default.get_config()
        if method:
            c = recipes.with_method(c, method)
    c.train.num_epochs = EPOCHS
    c.eval.faithfulness_steps = 8    # 9 points per deletion/insertion curve instead of 33
    c.eval.num_plot_images = 8
    return c
