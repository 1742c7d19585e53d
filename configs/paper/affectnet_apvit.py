"""The paper's APViT row on AffectNet: configs/paper/rafdb_apvit.py's recipe with lambda 9.

  python -m fer_jax.main --config=configs/paper/affectnet_apvit.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=weights/apvit_7cls.npz
"""
from configs import recipes


def get_config():
    c = recipes.paper_apvit("affectnet", align_weight=9.0)   # the authors' AffectNet lambda
    c.train.checkpoint_every_steps = 2000
    return c
