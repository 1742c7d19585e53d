"""Recipes the config files share: each returns a complete, validated-shape ConfigDict.

- `synthetic_cpu`: small models on the embedded synthetic faces, minutes on a CPU.
- `paper_resnet50`: the paper's CNN recipe (ResNet-50, large maps, SGD nesterov).
- `vit_finetune`: an ImageNet-pretrained ViT/DeiT fine-tuned with AdamW + cosine.
- `paper_apvit`: APViT (IR-50 + attentive pooling ViT) with its authors' published recipe.
- `with_method`: any of them with one of the paper's training-time CAM methods on.
"""
import ml_collections

from fer_jax import config_schema, methods


def synthetic_cpu(model_name: str, align_layer: str) -> ml_collections.ConfigDict:
    """synthetic_faces/small at 64 px, AdamW + cosine, 30 epochs of batch 64."""
    c = config_schema.defaults()
    c.dataset.name = "synthetic_faces/small"
    c.dataset.image_size = 64
    c.model.name = model_name
    c.align.weight = 4.0              # lambda: the paper's best on RAF-DB
    c.align.layers = (align_layer,)
    c.optim.name = "adamw"
    c.optim.weight_decay = 0.05
    c.optim.schedule = "cosine"
    c.train.batch_size = 64
    c.train.num_epochs = 30.0
    c.train.checkpoint_every_steps = 200
    return c


def paper_resnet50(dataset: str, align_weight: float) -> ml_collections.ConfigDict:
    """ResNet-50 (large maps, CAM head) at 224 px with the paper's optimiser and schedule."""
    c = config_schema.defaults()
    c.dataset.name = dataset
    c.dataset.image_size = 224
    c.model.name = "resnet50"
    c.model.width = 64
    c.model.large_maps = True          # stage3/4 at 28x28: the authors' setting for CAMs
    c.model.dtype = "bfloat16"         # the paper trains with mixed precision
    c.align.weight = align_weight
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
    c.input.workers = 8                # 224 px augmentation: several cores feed an accelerator
    return c


def vit_finetune(dataset: str, model_name: str, align_weight: float, learning_rate: float,
                 batch_size: int, num_epochs: float) -> ml_collections.ConfigDict:
    """A pretrained ViT/DeiT at 224 px, GAP head, last block aligned, AdamW + warmup + cosine."""
    c = config_schema.defaults()
    c.dataset.name = dataset
    c.dataset.image_size = 224
    c.model.name = model_name
    c.model.vit_head = "gap"           # CAM-ready; 'token' matches timm's default head
    c.model.vit_pos_size = 224         # the pretraining size of the weights
    c.model.dtype = "bfloat16"
    c.model.drop_path = 0.1
    c.align.weight = align_weight
    c.align.layers = ("block11",)      # the last of 12 blocks
    c.optim.name = "adamw"
    c.optim.learning_rate = learning_rate
    c.optim.weight_decay = 0.05
    c.optim.schedule = "cosine"
    c.optim.warmup_epochs = 1.0
    c.train.batch_size = batch_size
    c.train.num_epochs = num_epochs
    c.train.checkpoint_every_steps = 1000
    c.eval.batch_size = 256
    c.input.workers = 8
    return c


def paper_apvit(dataset: str, align_weight: float) -> ml_collections.ConfigDict:
    """APViT at 112 px, IR-50's stage-3 grid aligned, as APViT's published RAF-DB recipe:
    SGD (momentum 0.9; fer_jax's is nesterov) at 1e-3, weight decay 5e-4, cosine to 0 over
    40 epochs, batch 128, float32 (docs/method.md, "APViT", for what differs)."""
    c = config_schema.defaults()
    c.dataset.name = dataset
    c.dataset.image_size = 112         # IR-50's stage3 is then 14x14: APViT's 196 cells
    c.model.name = "apvit"
    c.model.vit_head = "token"         # APViT's head reads the class token
    c.model.vit_pos_size = 112         # the 14x14 grid of the converted ViT-S embeddings
    c.align.weight = align_weight
    c.align.layers = ("stage3",)       # the IR-50 grid before pooling (the authors' layer 1)
    c.optim.name = "sgd"
    c.optim.learning_rate = 1e-3
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "cosine"
    c.train.batch_size = 128
    c.train.num_epochs = 40.0
    c.train.checkpoint_every_steps = 1000
    c.eval.batch_size = 256
    # APViT has no class map (the paper reports no CAM-COS for it): the attention maps of
    # its ViT part, placed on the 14x14 grid, are the maps evaluated.
    c.eval.cam_methods = ("cls_attention", "rollout")
    return c


# The training-time CAM methods of the paper's Table 1, the registered methods with paper
# configs, in registry order (docs/method.md, "Training-time methods").
TRAINING_TIME_METHODS = methods.paper_methods()


def with_method(c: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """`c` with one training-time CAM method switched on (its record's `switch`,
    fer_jax.methods), at the reference code's settings (the schema's defaults: WILDCAT 5
    modalities, kmax 0.5, kmin 0.1, alpha 0.6; ACoL threshold 0.1; ADL drop rate 0.4,
    threshold 0.1; CutMix beta 1, here with probability 1). WILDCAT, ACoL, PRM and ADL need
    a ResNet, TS-CAM a ViT/DeiT; CutMix fits any model. A ConfigError names an unknown
    method and the registered ones."""
    return methods.switch_on(c, method)
