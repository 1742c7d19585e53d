"""The paper's RAF-DB row: ResNet-50 (large maps, CAM head) + AU alignment, lambda 4.

Build the records first (see README, "Real datasets"), then:
  python -m fer_jax.main --config=configs/rafdb_resnet50.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=resnet50.safetensors
"""
from configs import recipes


def get_config():
    # rafdb: basic set, 7 classes, the test split doubles as validation;
    # lambda 4: the best on RAF-DB in the paper's ablation.
    return recipes.paper_resnet50("rafdb", align_weight=4.0)
