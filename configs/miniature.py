"""The miniature paper: the demo's models on synthetic_faces/small, shortened so that the
whole `paper_table_synthetic` grid (fer_jax.grids) runs on a 2-core CPU within an hour.

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


def get_config(method: str = ""):
    # A method for ViTs alone (its record's families) trains the synthetic ViT.
    vit = bool(method) and method != APVIT and methods.get(method).families == {"vit"}
    if method == APVIT:
        c = synthetic_apvit.get_config()
    elif vit:
        c = recipes.with_method(synthetic_vit.get_config(), method)
    else:
        c = default.get_config()
        if method:
            c = recipes.with_method(c, method)
    # A fifth of the demo's 30 epochs (the ViT, 2.3x slower per step, a sixth): the whole
    # 14-cell table within an hour on 2 cores (measured: README). Short training is part of
    # what the miniature can show: how fast each method finds the expression. (APViT's
    # epochs are the ResNet's until its row is trained and timed.)
    c.train.num_epochs = 5.0 if vit else 6.0
    c.eval.faithfulness_steps = 8    # 9 points per deletion/insertion curve instead of 33
    c.eval.num_plot_images = 8
    return c
