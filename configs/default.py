"""The embedded demo: a small ResNet-18 on synthetic_faces (64 px), on one CPU.

  python -m fer_jax.main --config=configs/default.py --workdir=/tmp/fer_demo
  ... --config.align.weight=0   # the same without AU alignment
"""
from configs import recipes


def get_config():
    c = recipes.synthetic_cpu("resnet18", "stage4")   # stage4: the paper's "layer 5"
    c.model.width = 16            # a quarter of the standard width: minutes on a CPU
    c.model.large_maps = True     # 8x8 maps at stage4 for 64 px inputs
    c.optim.learning_rate = 2e-3
    c.optim.warmup_epochs = 1.0
    # 12 epochs: the whole demo (dataset build, training, evaluation) within 6 minutes on 2
    # idle CPU cores (README). The AU-guided model has nearly converged by then; the CE-only
    # one learns the expressions later (configs/miniature.py trains both for 30).
    c.train.num_epochs = 12.0
    return c
