"""The embedded demo: a small ResNet-18 on synthetic_faces (64 px), on one CPU.

  python -m fer_jax.main --config=configs/default.py --workdir=/tmp/fer_demo
  ... --config.align.weight=0   # the same without AU alignment
"""
from fer_jax import config_schema


def get_config():
    c = config_schema.defaults()
    c.dataset.name = "synthetic_faces/small"
    c.dataset.image_size = 64
    c.model.name = "resnet18"
    c.model.width = 16            # a quarter of the standard width: minutes on a CPU
    c.model.large_maps = True     # 8x8 maps at stage4 for 64 px inputs
    c.align.weight = 4.0          # lambda (the paper's best on RAF-DB)
    c.align.layers = ("stage4",)  # the last stage: the paper's "layer 5"
    c.optim.name = "adamw"
    c.optim.learning_rate = 2e-3
    c.optim.weight_decay = 0.05
    c.optim.schedule = "cosine"
    c.optim.warmup_epochs = 1.0
    c.train.batch_size = 64
    c.train.num_epochs = 30.0
    c.train.checkpoint_every_steps = 200
    return c
