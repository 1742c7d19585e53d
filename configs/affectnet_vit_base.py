"""ViT-B/16 (ImageNet-21k AugReg or timm weights) on AffectNet + AU alignment, lambda 9.

  python -m fer_jax.main --config=configs/affectnet_vit_base.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=ViT-B_16.npz
"""
from fer_jax import config_schema


def get_config():
    c = config_schema.defaults()
    c.dataset.name = "affectnet"
    c.dataset.image_size = 224
    c.model.name = "vit_base_patch16"
    c.model.vit_head = "gap"
    c.model.vit_pos_size = 224
    c.model.dtype = "bfloat16"
    c.model.drop_path = 0.1
    c.align.weight = 9.0              # the authors' AffectNet lambda
    c.align.layers = ("block11",)
    c.optim.name = "adamw"
    c.optim.learning_rate = 3e-5
    c.optim.weight_decay = 0.05
    c.optim.schedule = "cosine"
    c.optim.warmup_epochs = 1.0
    c.train.batch_size = 256
    c.train.num_epochs = 10.0
    c.train.checkpoint_every_steps = 2000
    c.eval.batch_size = 256
    c.input.cache = False
    c.input.shuffle_buffer = 20_000
    return c
