"""A small ViT (patch 8, 6 blocks) on synthetic_faces (64 px), on one CPU.

  python -m fer_jax.main --config=configs/synthetic_vit.py --workdir=/tmp/fer_vit
Block grids are (B, 8, 8, 128): `block5` is aligned exactly as a ResNet stage.
"""
from configs import recipes


def get_config():
    c = recipes.synthetic_cpu("vit_micro_patch8", "block5")   # the last block
    c.model.vit_head = "gap"        # mean of patch tokens: CAM-ready
    c.model.vit_pos_size = 64       # trained from scratch at 64 px: no resampling
    c.optim.learning_rate = 1e-3
    c.optim.warmup_epochs = 2.0
    # Per-layer CAMs read the last block (the ViT's default_cam_layers), where Grad-CAM
    # cannot see a block's channel mean (the AU evidence here) and `cam` ranks the
    # background first: the report shows the maps that beat the random one
    # (docs/method.md, "Which layer a ViT's maps read").
    c.eval.cam_methods = ("gradcam++", "layercam", "eigencam", "random", "centre")
    return c
