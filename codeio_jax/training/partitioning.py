"""The device mesh and the rules that place every array on it.

A mesh has four axes, sized by gin: `data` (pure data parallelism), `fsdp`
(data parallelism whose parameters and optimizer state are sharded too),
`experts` (the routed experts of MoE layers split over devices) and `tensor`
(Megatron-style splits of heads and MLP). -1 takes the devices the
others leave. Logical axis names, which the model puts on every parameter and
big activation, map onto mesh axes through `rules`: an array dimension takes
the first rule of its name whose mesh axes the array does not use already, so
the same "embed" is sharded over fsdp in a weight and left whole in an
activation whose batch dimension took fsdp first.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "experts", "tensor")

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # Outside the MoE blocks the experts axis is one more data-parallel axis.
    ("batch", ("data", "fsdp", "experts")),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("experts", "experts"),
)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; -1 (one axis at most) takes the devices the others leave.
    `experts` splits the routed experts of MoE layers over devices (expert
    parallelism); elsewhere it acts as data parallelism."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    experts: int = 1
    rules: tuple = DEFAULT_RULES

    def shape(self, device_count: int) -> tuple[int, ...]:
        """The mesh's shape in AXES order for `device_count` devices."""
        named = {"data": self.data, "fsdp": self.fsdp, "experts": self.experts, "tensor": self.tensor}
        free = [name for name, size in named.items() if size == -1]
        if len(free) > 1:
            raise ValueError(f"at most one mesh axis may be -1 (take the rest), got {', '.join(free)}")
        bad = [f"{name}={size}" for name, size in named.items() if size == 0 or size < -1]
        if bad:
            raise ValueError(f"mesh axes must be positive or -1, got {', '.join(bad)}")
        for name, size in named.items():
            if size != -1 and device_count % size:
                raise ValueError(f"mesh axis {name} = {size} does not divide the {device_count} devices")
        fixed = math.prod(size for size in named.values() if size != -1)
        if free:
            if device_count % fixed:
                others = " x ".join(f"{name} {size}" for name, size in named.items() if size != -1)
                raise ValueError(f"{device_count} devices do not split into {others} = {fixed} for axis "
                                 f"{free[0]!r} to take the rest")
            named[free[0]] = device_count // fixed
        if math.prod(named.values()) != device_count:
            sizes = " x ".join(f"{name} {size}" for name, size in named.items())
            raise ValueError(f"the mesh {sizes} needs {math.prod(named.values())} devices; there are {device_count}")
        return tuple(named[axis] for axis in AXES)


def make_mesh(config: MeshConfig, devices: Sequence[Any] | None = None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = config.shape(len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError, AssertionError):
        # CPU and odd topologies: any order is as good as another.
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, AXES)


def shardings(logical_tree: Any, mesh: Mesh, rules: Sequence) -> Any:
    """NamedShardings for a tree of logical PartitionSpecs (decoder.logical_axes)."""
    return nn.logical_to_mesh_sharding(logical_tree, mesh, rules)


def batch_sharding(mesh: Mesh, rules: Sequence) -> NamedSharding:
    """Where a [batch, length] input array goes."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch", "length"), rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


class DistributedError(ValueError):
    """A multi-process job described incompletely; the message says what to set."""


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Join the other processes of a multi-process job; nothing for one process.
    Must run before anything touches the devices.

    Each argument left None is read from JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID (any cluster: loopback, Kubernetes,
    hand-started hosts). With none of them set, jax.distributed works the job
    out by itself where a launcher it knows started several processes: a Cloud
    TPU slice, SLURM, Open MPI.
    """
    import os

    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _environ_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _environ_int("JAX_PROCESS_ID")
    given = {"coordinator address": coordinator_address, "number of processes": num_processes,
             "process id": process_id}
    detectable = _cluster_detectable()
    if all(value is None for value in given.values()):
        if detectable:
            jax.distributed.initialize()
        return
    if num_processes == 1:
        return
    missing = [name for name, value in given.items() if value is None]
    if missing and not detectable:
        flags = {"coordinator address": "--coordinator_address or JAX_COORDINATOR_ADDRESS",
                 "number of processes": "--num_processes or JAX_NUM_PROCESSES",
                 "process id": "--process_id or JAX_PROCESS_ID"}
        raise DistributedError(f"a multi-process job needs its coordinator address, its number of processes and "
                               f"each process's id; set {'; '.join(flags[name] for name in missing)}")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def _environ_int(name: str) -> int | None:
    import os

    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name} must be an integer, got {value!r}") from None


def _cluster_detectable() -> bool:
    """Whether this process was started by a launcher whose job
    jax.distributed.initialize() works out by itself."""
    import os

    def count(name: str) -> int:
        try:
            return int(os.environ.get(name, "1"))
        except ValueError:
            return 1

    def hosts(name: str) -> int:
        return len([host for host in os.environ.get(name, "").split(",") if host.strip()])

    if count("SLURM_NTASKS") > 1 or count("OMPI_COMM_WORLD_SIZE") > 1:
        return True
    if hosts("TPU_WORKER_HOSTNAMES") > 1 or hosts("TPU_PROCESS_ADDRESSES") > 1:  # GKE TPU slices
        return True
    # A TPU VM created with gcloud names its slice's workers only in the metadata
    # server, which jax.distributed asks; jax notes at import (from the PCI bus)
    # whether this is a Cloud TPU VM. A single-host VM joins a job of one.
    try:
        from jax._src import cloud_tpu_init
    except ImportError:
        return False
    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))
