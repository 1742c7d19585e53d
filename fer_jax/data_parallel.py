"""Run one per-device function data-parallel, with `jax.pmap` or `jit` + `shard_map`.

The step functions of train.py / evaluate.py are written once, per device,
with named-axis collectives over AXIS. `DataParallel` places the replicated
state and the sharded batch for either backend and wraps the function:
- "pmap": the design card's backend; arrays carry a leading device axis.
- "shard_map": jit over a 1-D `Mesh` of all devices (pmap's supported
  successor in current JAX); arrays are global, sharded along the batch.
Host-side batches always arrive as (local_devices, per_device_batch, ...).
With several processes (`jax.distributed`), each process holds the slices of
its own devices: `shard_ids` says which global positions those are.
"""
from typing import Any, Callable, List, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "batch"  # the one named axis: devices split the batch


class DataParallel:
    """Placement and wrapping of per-device functions for one backend."""

    def __init__(self, spmd: bool = False, devices: Optional[Sequence[jax.Device]] = None):
        self.spmd = spmd
        self.devices = list(devices) if devices is not None else jax.devices()
        self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        # pmap's layout: leading axis of length num_local_devices, one slice per device.
        self._leading = NamedSharding(Mesh(np.array(self.local_devices), (AXIS,)), P(AXIS))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def num_local_devices(self) -> int:
        return len(self.local_devices)

    @property
    def shard_ids(self) -> List[int]:
        """Global positions (0 .. num_devices-1) of this process's devices, in local order.

        Device i of the mesh always gets data shard i, so the data a device
        sees does not depend on how devices are grouped into processes.
        """
        position = {d.id: i for i, d in enumerate(self.devices)}
        return [position[d.id] for d in self.local_devices]

    # -- placement -------------------------------------------------------------
    def replicate(self, tree: Any) -> Any:
        """Copies a pytree of arrays (the same on every process) onto every device."""
        if self.spmd:
            sharding = NamedSharding(self.mesh, P())
            # From each process's own copy: works when the mesh spans processes.
            # (mypy cannot infer a lambda with a default argument: a false positive.)
            return jax.tree.map(lambda x: x if _placed(x, sharding) else
                                jax.make_array_from_callback(
                                    np.shape(x), sharding,
                                    lambda idx, x=x: np.asarray(x)[idx]),  # type: ignore[misc]
                                tree)
        n = self.num_local_devices
        # A leading device axis, slice i placed on local device i, as pmap wants.
        return jax.tree.map(
            lambda x: jax.device_put(np.stack([np.asarray(x)] * n), self._leading), tree)

    def unreplicate(self, tree: Any) -> Any:
        """One copy of a replicated pytree, still on device(s)."""
        if self.spmd:
            return tree
        return jax.tree.map(lambda x: x[0], tree)

    def host_copy(self, tree: Any) -> Any:
        """One NumPy copy of a replicated pytree (checkpoints, logs, pictures).

        Reads this process's first device only, so it also works when the
        arrays span devices of other processes (where `jax.device_get` fails).
        """
        def one(x):
            if not isinstance(x, jax.Array):
                return np.asarray(x)
            local = np.asarray(x.addressable_data(0))
            return local if self.spmd else local[0]  # pmap: drop the device axis
        return jax.tree.map(one, tree)

    def shard(self, batch: Any) -> Any:
        """Host batch (local_devices, per_device, ...) -> device-resident input."""
        if not self.spmd:
            return jax.device_put(batch, self._leading)
        sharding = NamedSharding(self.mesh, P(AXIS))
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(
                sharding, np.reshape(x, (-1,) + x.shape[2:])), batch)

    def to_host(self, tree: Any) -> Any:
        """Per-sample outputs -> NumPy (num_local_examples, ...) in host order."""
        if self.spmd:
            return jax.tree.map(
                lambda x: np.concatenate(
                    [np.asarray(s.data) for s in sorted(
                        x.addressable_shards, key=lambda s: s.index[0].start or 0)]), tree)
        return jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), tree)

    # -- wrapping --------------------------------------------------------------
    def wrap(self, fn: Callable, replicated_out: bool = True, donate_state: bool = False
             ) -> Callable:
        """Wraps fn(state, batch) -> out, state replicated and batch sharded.

        `replicated_out`: out is the same on every device (psum'd metrics, the
        new state); otherwise out is per-sample, sharded like the batch.
        """
        donate = (0,) if donate_state else ()
        if not self.spmd:
            return jax.pmap(fn, axis_name=AXIS, devices=self.local_devices
                            if jax.process_count() == 1 else None, donate_argnums=donate)
        out_spec = P() if replicated_out else P(AXIS)
        # check_vma=False keeps pmap's semantics: gradients of replicated params
        # are per-device until the step's own psum (with vma tracking JAX would
        # insert that psum itself and the step would count it twice).
        mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=(P(), P(AXIS)),
                               out_specs=out_spec, check_vma=False)
        return jax.jit(mapped, donate_argnums=donate)


def _placed(x: Any, sharding: NamedSharding) -> bool:
    return isinstance(x, jax.Array) and x.sharding == sharding


def sync_processes(name: str, timeout_s: int = 1800) -> None:
    """Returns when every process has called it with `name` (at once with one process).

    A barrier of the jax.distributed coordination service, not a collective:
    CPU collectives (gloo) give up when processes reach them more than 30 s
    apart, which uneven start-up work (imports, compilation, reading) can exceed
    on a loaded host. Called before the first collective of each phase.
    """
    if jax.process_count() > 1:
        import orbax.checkpoint as ocp
        ocp.multihost.get_barrier_sync_fn()(key=f"fer_jax_{name}", timeout_ms=timeout_s * 1000)
