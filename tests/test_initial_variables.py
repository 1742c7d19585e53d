"""models.initial_variables: the initialiser compiled for one run gives bitwise the
variables of `jax.jit(model.init)` at XLA's defaults, for the initialisers our models use."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import models


class _EveryInitialiser(nn.Module):
    """The initialisers of fer_jax's backbones, each on a small parameter."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(8, (3, 3))(x)                                  # lecun normal (truncated)
        x = nn.BatchNorm(use_running_average=not train)(x)         # ones, zeros, statistics
        x = nn.Conv(16, (3, 3), kernel_init=nn.initializers.variance_scaling(
            2.0, "fan_out", "truncated_normal"))(x)                # ResNet's He init
        x = nn.Dense(32, kernel_init=nn.initializers.truncated_normal(0.02))(x.mean((1, 2)))
        position = self.param("pos", nn.initializers.normal(0.02), (1, 4, 16))   # ViT's
        return nn.Dense(7, kernel_init=nn.initializers.xavier_uniform())(x) + position.sum()


def test_initial_variables_are_those_of_jit_init_at_xla_defaults():
    model, key, size = _EveryInitialiser(), jax.random.key(3), 16
    # XLA's default optimisation level, whatever the session's XLA_FLAGS say (the suite
    # compiles at level 0: subprocess_runs.SUITE_XLA_OPTIONS).
    images = jnp.zeros((1, size, size, 3), jnp.float32)
    expected = jax.jit(lambda k, x: model.init(k, x, train=False)).lower(key, images).compile(
        compiler_options={"xla_backend_optimization_level": 3})(key, images)
    got = models.initial_variables(model, key, size, train=False)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for (path, want), have in zip(jax.tree_util.tree_leaves_with_path(expected),
                                  jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(have), np.asarray(want),
                                      err_msg=jax.tree_util.keystr(path))
    # The draws are real ones: the initialisers' scales, not zeros.
    assert 0.01 < float(np.std(np.asarray(got["params"]["pos"]))) < 0.03
