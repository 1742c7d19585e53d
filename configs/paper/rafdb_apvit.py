"""The paper's APViT row on RAF-DB: IR-50 + attentive pooling ViT-S, stage3 aligned, lambda 4.

  python -m fer_jax.convert_weights --model=apvit --input=backbone_ir50_ms1m_epoch120.pth \
      --input=vit_small_p16_224-15ec54c9.pth --output=weights/ --num_classes=7 --image_size=112
  python -m fer_jax.main --config=configs/paper/rafdb_apvit.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=weights/apvit_7cls.npz
"""
from configs import recipes


def get_config():
    return recipes.paper_apvit("rafdb", align_weight=4.0)
