"""Orbax checkpoints of the train state: save every K steps, keep N, resume.

The state is saved as a plain nested dict (flax state dict) of host arrays,
so a checkpoint does not depend on how the state was placed on devices.
"""
import os
from typing import Any

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp


def create_manager(directory: str, train_config: ml_collections.ConfigDict
                   ) -> ocp.CheckpointManager:
    """A manager keeping `keep_checkpoints` checkpoints under `directory`."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=train_config.keep_checkpoints, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Saves `state` (unreplicated) as step `step`; writing finishes in the background."""
    # Copy to host first: the device buffers may be donated to the next step.
    tree = jax.device_get(flax.serialization.to_state_dict(state))
    manager.save(step, args=ocp.args.StandardSave(tree))


def restore_latest(manager: ocp.CheckpointManager, state: Any) -> Any:
    """`state` filled from the latest checkpoint, or `state` itself if there is none."""
    step = manager.latest_step()
    if step is None:
        return state
    target = jax.tree.map(np.asarray, flax.serialization.to_state_dict(state))
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return flax.serialization.from_state_dict(state, restored)
