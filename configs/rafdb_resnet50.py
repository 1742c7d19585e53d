"""The paper's RAF-DB row: ResNet-50 (large maps, CAM head) + AU alignment.

Build the records first (see README, "Real datasets"), then:
  python -m fer_jax.main --config=configs/rafdb_resnet50.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=resnet50.safetensors
"""
from fer_jax import config_schema


def get_config():
    c = config_schema.defaults()
    c.dataset.name = "rafdb"           # basic set, 7 classes; test split doubles as validation
    c.dataset.image_size = 224
    c.model.name = "resnet50"
    c.model.width = 64
    c.model.large_maps = True          # stage3/4 at 28x28: the authors' setting for CAMs
    c.model.dtype = "bfloat16"         # the paper trains with mixed precision
    c.align.weight = 4.0               # lambda: best on RAF-DB in the paper's ablation
    c.align.layers = ("stage4",)       # "layer 5"
    c.optim.name = "sgd"               # nesterov momentum 0.9
    c.optim.learning_rate = 0.002
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "step"          # x0.9 every 4 epochs
    c.optim.decay_epochs = 4.0
    c.optim.decay_factor = 0.9
    c.train.batch_size = 224
    c.train.num_epochs = 20.0
    c.train.checkpoint_every_steps = 1000
    c.eval.batch_size = 256
    c.input.shuffle_buffer = 20_000
    c.input.cache = False              # 12k 224 px images: stream instead of caching
    return c
