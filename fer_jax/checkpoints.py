"""Orbax checkpoints of the train state: save every K steps, keep N, resume;
or read back the model's variables alone, for inference.

The state is saved as a plain nested dict (flax state dict) of host arrays,
so a checkpoint does not depend on how the state was placed on devices.
"""
import os
from typing import Any, Dict, Mapping, Tuple

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp


def absolute(path: str) -> str:
    """A local path made absolute (~ expanded); a URL such as gs://bucket/run as given."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def create_manager(directory: str, train_config: ml_collections.ConfigDict
                   ) -> ocp.CheckpointManager:
    """A manager keeping `keep_checkpoints` checkpoints under `directory`.

    Orbax writes each checkpoint into a temporary directory and renames it when
    complete, so a process killed while saving leaves the previous checkpoint
    as the latest; the unfinished temporary directory is deleted here.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=train_config.keep_checkpoints, create=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(absolute(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Saves `state` (host arrays, e.g. DataParallel.host_copy) as step `step`.

    Writing finishes in the background. With several processes all of them
    must call this with the same step (orbax synchronises them).
    """
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


# CheckpointManager keeps its single item in this folder of each step.
_ITEM = "default"
_INFERENCE_KEYS = ("params", "batch_stats")


def restore_variables(directory: str, template: Mapping[str, Any]
                      ) -> Tuple[Dict[str, Any], int]:
    """({"params", "batch_stats"} of the latest checkpoint, its step), optimiser state unread.

    template: the model's variables or their shapes (jax.eval_shape of init);
    only its structure is used. Raises FileNotFoundError when there is no checkpoint.
    """
    directory = os.path.abspath(directory)
    step = None
    if os.path.isdir(directory):
        step = ocp.CheckpointManager(directory).latest_step()
    if step is None:
        raise FileNotFoundError(
            f"no checkpoint in {directory}: train (or resume) the run first with "
            "python -m fer_jax.main --config=... --workdir=" + os.path.dirname(directory))
    item = {k: template[k] for k in _INFERENCE_KEYS if k in template}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    restored = ocp.PyTreeCheckpointer().restore(
        os.path.join(directory, str(step), _ITEM),
        args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True))
    return {k: restored[k] for k in item}, int(step)
