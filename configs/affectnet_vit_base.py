"""ViT-B/16 (ImageNet-21k AugReg or timm weights) on AffectNet + AU alignment, lambda 9.

  python -m fer_jax.main --config=configs/affectnet_vit_base.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=ViT-B_16.npz
"""
from configs import recipes


def get_config():
    c = recipes.vit_finetune("affectnet", "vit_base_patch16", align_weight=9.0,
                             learning_rate=3e-5, batch_size=256, num_epochs=10.0)
    c.train.checkpoint_every_steps = 2000
    return c
