"""CutMix (Yun et al. 2019): training batches box-mixed, images, labels and AU maps
(fer_jax.cutmix). Any model; it keeps its head, so a GAP model's built-in map is CAM."""
import functools

from fer_jax import cutmix
from fer_jax.fields import Field, number
from fer_jax.methods import base

base.register(base.Method(
    name="cutmix", summary="Yun et al. 2019: batches box-mixed, AU maps included",
    switch=("train.cutmix_prob", 1.0),        # every batch, as the paper's CutMix row
    on=lambda config: config.train.cutmix_prob > 0,
    options=(
        base.Option("train.cutmix_prob", Field(
            0.0, "CutMix: probability that a batch is box-mixed, images, labels and AU maps "
            "(0 = off; the paper's CutMix row: 1).", number(0, 1))),
        base.Option("train.cutmix_beta", Field(
            1.0, "CutMix: the mixing ratio is drawn from Beta(beta, beta).",
            number(0, lo_open=True))),
    ),
    transform=lambda config: functools.partial(
        cutmix.mix_at, prob=float(config.train.cutmix_prob),
        beta=float(config.train.cutmix_beta)),
    paper_configs=base.paper_configs("cutmix", "rafdb", "affectnet")))
