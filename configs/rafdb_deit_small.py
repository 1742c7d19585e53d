"""The paper's transformer row on RAF-DB: DeiT-S (ImageNet-pretrained) + AU alignment.

  python -m fer_jax.main --config=configs/rafdb_deit_small.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=deit_small_patch16_224.safetensors
Block grids are (B, 14, 14, 384); the last block (`block11`) is aligned.
"""
from fer_jax import config_schema


def get_config():
    c = config_schema.defaults()
    c.dataset.name = "rafdb"
    c.dataset.image_size = 224
    c.model.name = "deit_small_patch16"
    c.model.vit_head = "gap"          # CAM-ready; 'token' matches timm's default head
    c.model.vit_pos_size = 224        # the pretraining size of the weights
    c.model.dtype = "bfloat16"
    c.model.drop_path = 0.1
    c.align.weight = 4.0
    c.align.layers = ("block11",)
    c.optim.name = "adamw"
    c.optim.learning_rate = 5e-5
    c.optim.weight_decay = 0.05
    c.optim.schedule = "cosine"
    c.optim.warmup_epochs = 1.0
    c.train.batch_size = 128
    c.train.num_epochs = 20.0
    c.train.checkpoint_every_steps = 1000
    c.eval.batch_size = 256
    c.input.cache = False
    c.input.shuffle_buffer = 20_000
    return c
