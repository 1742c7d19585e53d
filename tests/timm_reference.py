"""Helpers shared by the tests that compare fer_jax with timm / pytorch-grad-cam.

Random timm models whose norm affines, biases, tokens and BatchNorm statistics
all matter, saved as `.safetensors` and loaded into fer_jax with
`fer_jax.weights.load_pretrained`, so both libraries run the same network.
"""
import re

import jax
import jax.numpy as jnp
import safetensors.torch as safetensors_torch
import torch

torch.set_num_threads(2)


def create(name: str, seed: int, **kwargs):
    """timm.create_model(name, pretrained=False, **kwargs) with its initialisation seeded.

    timm draws the weights that `randomise` leaves alone (convolutions, linear layers)
    from torch's global generator: unseeded, every test session built another
    network, and a per-image tolerance that one draw met another could miss.
    """
    import timm
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **kwargs)


def randomise(model, seed: int) -> None:
    """Random norm affines, biases and tokens, so that none of them is trivially 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    # A residual block's last BN scales its branch: damped, as in trained nets,
    # so that fp32 rounding does not compound block after block past 1e-4.
    last_bn = re.compile(r"layer\d\.\d+\.bn3\.weight" if "Bottleneck" in str(type(model.layer1[0]))
                         else r"layer\d\.\d+\.bn2\.weight") if hasattr(model, "layer1") else None
    with torch.no_grad():
        for name, p in model.named_parameters():
            if last_bn is not None and last_bn.fullmatch(name):
                p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.1)
            elif p.ndim == 1 and name.endswith("weight"):          # norm scales
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.ndim == 1:                                     # biases
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif name in ("cls_token", "pos_embed"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def calibrate_batchnorm(model, image_size: int, seed: int) -> None:
    """Running stats := statistics of a random batch (momentum 1), then a perturbation.

    Random weights with default running stats (0, 1) make eval-mode activations
    blow up; calibrated ones keep them O(1) while every BN still matters.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, image_size, image_size, generator=g))
        for bn in bns:
            # A channel that the small batch left (nearly) constant would divide
            # fp32 rounding noise by ~sqrt(eps): floor the variance.
            var = bn.running_var.clamp(min=0.1 * float(bn.running_var.mean()))
            bn.running_var.copy_(var * (torch.rand(var.shape, generator=g) * 0.4 + 0.8))
            bn.running_mean.add_(torch.randn(bn.running_mean.shape, generator=g) * 0.05)
    model.eval()


def blank_variables(model, size: int):
    """Zero variables of the model's shapes: cheaper than an eager `init`, and all get loaded."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def save(model, tmp_path) -> str:
    path = str(tmp_path / "model.safetensors")
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path
