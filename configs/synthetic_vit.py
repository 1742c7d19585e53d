"""A small ViT (patch 8, 6 blocks) on synthetic_faces (64 px), on one CPU.

  python -m fer_jax.main --config=configs/synthetic_vit.py --workdir=/tmp/fer_vit
Block grids are (B, 8, 8, 128): `block5` is aligned exactly as a ResNet stage.
"""
from fer_jax import config_schema


def get_config():
    c = config_schema.defaults()
    c.dataset.name = "synthetic_faces/small"
    c.dataset.image_size = 64
    c.model.name = "vit_micro_patch8"
    c.model.vit_head = "gap"        # mean of patch tokens: CAM-ready
    c.model.vit_pos_size = 64       # trained from scratch at 64 px: no resampling
    c.align.weight = 4.0
    c.align.layers = ("block5",)    # the last block
    c.optim.name = "adamw"
    c.optim.learning_rate = 1e-3
    c.optim.weight_decay = 0.05
    c.optim.schedule = "cosine"
    c.optim.warmup_epochs = 2.0
    c.train.batch_size = 64
    c.train.num_epochs = 30.0
    c.train.checkpoint_every_steps = 200
    return c
