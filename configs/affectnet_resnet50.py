"""The paper's AffectNet row: ResNet-50 + AU alignment with lambda = 9.

  python -m fer_jax.main --config=configs/affectnet_resnet50.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=resnet50.safetensors
"""
from configs import recipes


def get_config():
    # affectnet: 7 classes (affectnet/8 adds Contempt); its official validation set
    # (500 per class) is the test split. lambda 9: the authors' AffectNet default.
    c = recipes.paper_resnet50("affectnet", align_weight=9.0)
    c.train.checkpoint_every_steps = 2000
    return c
