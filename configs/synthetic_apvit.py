"""A small APViT (IR stages of 1, 2, 2 units, 4 blocks of 128) on synthetic_faces (64 px), on one CPU.

  python -m fer_jax.main --config=configs/synthetic_apvit.py --workdir=/tmp/fer_apvit
The IR grid `stage3` is (B, 8, 8, 64) and is aligned; 52 of its 64 cells enter the ViT.
"""
from configs import recipes


def get_config():
    c = recipes.synthetic_cpu("apvit_micro", "stage3")
    c.model.vit_head = "token"      # APViT's class-token head
    c.model.vit_pos_size = 64       # trained from scratch at 64 px: no resampling
    c.optim.learning_rate = 1e-3
    c.optim.warmup_epochs = 2.0
    # No class map: the ViT part's attention maps, and the reference rows.
    c.eval.cam_methods = ("cls_attention", "rollout", "random", "centre")
    return c
