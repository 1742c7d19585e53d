"""Optimiser and learning-rate schedule from `config.optim`.

- "sgd": SGD with nesterov momentum and L2 weight decay, step decay (the paper).
- "adamw": AdamW with decoupled weight decay, usually with warmup + cosine.
"""
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                           num_steps: int) -> optax.Schedule:
    """Step -> learning rate: optional linear warmup, then step/cosine/constant."""
    o = config.optim
    warmup = int(round(o.warmup_epochs * steps_per_epoch))
    if o.schedule == "step":
        every = max(1, int(round(o.decay_epochs * steps_per_epoch)))
        main = optax.exponential_decay(o.learning_rate, every, o.decay_factor, staircase=True)
    elif o.schedule == "cosine":
        main = optax.cosine_decay_schedule(o.learning_rate, max(1, num_steps - warmup))
    else:
        main = optax.constant_schedule(o.learning_rate)
    if warmup == 0:
        return main
    ramp = optax.linear_schedule(0.0, o.learning_rate, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def create_optimizer(config: ml_collections.ConfigDict,
                     schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optax transformation named by config.optim.name."""
    o = config.optim
    if o.name == "sgd":
        # L2 on every parameter, as torch.optim.SGD(weight_decay=...) in the paper.
        return optax.chain(
            optax.add_decayed_weights(o.weight_decay),
            optax.sgd(schedule, momentum=o.momentum, nesterov=True))
    return optax.adamw(schedule, weight_decay=o.weight_decay)
