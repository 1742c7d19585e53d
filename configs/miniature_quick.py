"""The miniature paper shortened to 6 epochs (TS-CAM's ViT: 5): how fast each method finds
the expression, in under an hour for 14 cells on 2 cores. The lambda sweep and the layer
ablation on synthetic faces train this; `paper_table_synthetic_quick` is its table (the
without-AU models have not learnt yet at this length: docs/paper_table_synthetic_quick.md).

  python -m fer_jax.main --config=configs/miniature_quick.py:wildcat --workdir=DIR
"""
from configs import miniature


def get_config(method: str = ""):
    c = miniature.get_config(method)
    c.train.num_epochs = 5.0 if miniature.uses_vit(method) else 6.0
    return c
