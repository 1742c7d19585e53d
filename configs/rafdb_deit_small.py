"""The paper's transformer row on RAF-DB: DeiT-S (ImageNet-pretrained) + AU alignment.

  python -m fer_jax.main --config=configs/rafdb_deit_small.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=deit_small_patch16_224.safetensors
Block grids are (B, 14, 14, 384); the last block (`block11`) is aligned.
"""
from configs import recipes


def get_config():
    return recipes.vit_finetune("rafdb", "deit_small_patch16", align_weight=4.0,
                                learning_rate=5e-5, batch_size=128, num_epochs=20.0)
