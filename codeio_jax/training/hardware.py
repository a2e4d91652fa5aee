"""The accelerators we know: memory per chip and dense bf16 peak, in one table,
and Cloud TPU slice names turned into the devices of that slice.

Sources (vendors' data sheets, read 2026-12):
  TPU v4   cloud.google.com/tpu/docs/v4   275 TFLOP/s bf16, 32 GiB HBM2, 2 TensorCores a chip
  TPU v5e  cloud.google.com/tpu/docs/v5e  197 TFLOP/s bf16, 16 GB HBM2, 1 TensorCore a chip
  TPU v5p  cloud.google.com/tpu/docs/v5p  459 TFLOP/s bf16, 95 GB HBM2e, 2 TensorCores a chip
  TPU v6e  cloud.google.com/tpu/docs/v6e  918 TFLOP/s bf16, 32 GB HBM, 1 TensorCore a chip
  H100/H200 SXM  nvidia.com data sheets  989 TFLOP/s dense bf16; A100 312; L40S 362
Where a sheet says GB the capacity is taken in decimal gigabytes, the smaller
reading, so that "fits" errs on the safe side.

Also here: the XLA flag that makes remat save memory on a CPU host, the
compiler's freed memory handed back, and the choice of the CPU backend on a
host that has libtpu but no TPU.

A slice name counts TensorCores for v4 and v5p (v5p-64 is 32 chips) and chips
for v5e and v6e (v6e-256 is 256 chips), as `gcloud` accelerator types do.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str  # as in a slice name: "v5p"
    device_kinds: tuple[str, ...]  # what jax's device_kind says for it
    peak_bf16_flops: float
    hbm_bytes: int | None  # None: not a TPU (the table gives GPUs their peak only)
    cores_per_chip: int = 1  # TensorCores a slice name counts per chip
    torus_dims: int = 2


TPUS = {
    "v4": Chip("v4", ("TPU v4",), 275e12, 32 * GIB, cores_per_chip=2, torus_dims=3),
    "v5e": Chip("v5e", ("TPU v5 lite", "TPU v5e"), 197e12, 16 * 10**9),
    "v5p": Chip("v5p", ("TPU v5p", "TPU v5"), 459e12, 95 * 10**9, cores_per_chip=2, torus_dims=3),
    "v6e": Chip("v6e", ("TPU v6 lite", "TPU v6e"), 918e12, 32 * 10**9),
}
GPUS = {name: Chip(name, (name,), peak, None) for name, peak in (
    ("H100", 989e12), ("H200", 989e12), ("H800", 989e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12))}


class TopologyError(ValueError):
    """A slice name or mesh we cannot compile for."""


def chip_for_device_kind(kind: str) -> Chip | None:
    """The table's chip for a jax device_kind (longest matching name first), None when unknown (CPU)."""
    candidates = [(name, chip) for chip in (*TPUS.values(), *GPUS.values()) for name in chip.device_kinds]
    for name, chip in sorted(candidates, key=lambda pair: -len(pair[0])):
        if name.lower() in kind.lower():
            return chip
    return None


def peak_flops_per_device(kind: str) -> float | None:
    chip = chip_for_device_kind(kind)
    return chip.peak_bf16_flops if chip else None


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # as the user wrote it
    chip: Chip | None  # None for fake CPU devices
    chips: int
    dims: tuple[int, ...] = ()  # the torus, e.g. (2, 4, 4)

    @property
    def libtpu_name(self) -> str:
        return f"{self.chip.name}:{'x'.join(map(str, self.dims))}"


def known_topologies() -> str:
    return ("v4-8 .. v4-4096, v5p-8 .. v5p-12288 (TensorCores: 2 a chip), v5e-1 .. v5e-256, v6e-1 .. v6e-256 "
            "(chips), powers of two; or an explicit torus such as v5p:4x4x12, v6e:8x16; or cpu:N")


def parse_topology(name: str) -> Topology:
    """`v5p-64`, `v6e:16x16` or `cpu:8` -> a Topology; anything else lists the known names."""
    text = name.strip().lower()
    if match := re.fullmatch(r"cpu:(\d+)", text):
        count = int(match.group(1))
        if count < 1:
            raise TopologyError("cpu:N needs N >= 1")
        return Topology(name, None, count)
    if match := re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+)*)", text):
        chip = TPUS[match.group(1)]
        dims = tuple(int(d) for d in match.group(2).split("x"))
        if len(dims) != chip.torus_dims or min(dims) < 1:
            raise TopologyError(f"{name}: a {chip.name} torus has {chip.torus_dims} dimensions, e.g. "
                                f"{chip.name}:{'x'.join(['2'] * chip.torus_dims)}")
        return Topology(name, chip, math.prod(dims), dims)
    if match := re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", text):
        chip = TPUS[match.group(1)]
        count = int(match.group(2))
        if count % chip.cores_per_chip:
            raise TopologyError(f"{name}: {chip.name} slice names count TensorCores, {chip.cores_per_chip} a chip")
        chips = count // chip.cores_per_chip
        dims = _power_of_two_torus(chips, chip.torus_dims)
        if dims is None:
            example = "4x4x12" if chip.torus_dims == 3 else "8x16"
            raise TopologyError(f"{name} is not a slice we can name by size; give its torus (e.g. "
                                f"{chip.name}:{example}). Known: {known_topologies()}")
        return Topology(name, chip, chips, dims)
    raise TopologyError(f"unknown topology {name!r}; known: {known_topologies()}")


def _power_of_two_torus(chips: int, ndim: int) -> tuple[int, ...] | None:
    """The usual torus of a power-of-two slice: grow from 2x2(x1) by doubling the
    last of the smallest dimensions (v5p: 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8, ...;
    v6e: 2x2, 2x4, 4x4, 4x8, 8x8, 8x16, 16x16), as Cloud TPU's slice tables list them."""
    if chips == 1:
        return (1,) * ndim
    if chips < 4 or chips & (chips - 1):
        return None
    dims = [2, 2] + [1] * (ndim - 2)
    while math.prod(dims) < chips:
        smallest = min(dims)
        last = max(i for i, d in enumerate(dims) if d == smallest)
        dims[last] *= 2
    return tuple(dims)


# XLA:CPU's default scheduler orders a step for concurrency: it runs the
# rematerialised forward of many layers ahead of their backward pass, which
# keeps every layer's activations alive, so remat saves almost nothing (the
# SmolLM2-135M shape at 4 x 1024 with full remat: 21 GiB by XLA's memory
# analysis, 8.6 GiB with the memory-minimising scheduler; the 2 x 512 step is
# also faster with it on 2 cores; benchmarks/chunked_loss.py).
_CPU_SCHEDULER_FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"


def prefer_memory_scheduler_on_cpu(environ=os.environ) -> None:
    """Ask XLA:CPU for its memory-minimising scheduler, unless XLA_FLAGS already
    chooses; it must run before jax starts its CPU backend, and changes nothing
    on TPU or GPU."""
    flags = environ.get("XLA_FLAGS", "")
    if _CPU_SCHEDULER_FLAG not in flags:
        environ["XLA_FLAGS"] = f"{flags} --{_CPU_SCHEDULER_FLAG}=false".strip()


def return_freed_memory_to_the_system() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim).
    XLA:CPU's compiler frees most of what it allocated (about 0.8 GiB for the
    SmolLM2-135M step) but glibc keeps it in its arenas, and a step's own buffers,
    allocated fresh, cannot reuse it: resident memory would carry the compiler's
    peak through the run. A no-op where the C library is not glibc."""
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def skip_tpu_probe_without_a_tpu(environ=os.environ) -> bool:
    """On a host with libtpu installed (the `tpu` extra, for compiling) but no
    TPU and no other accelerator plugin, start jax on its CPU backend: otherwise
    libtpu probes for a TPU at start-up and prints errors about the metadata
    server and worker hostnames that a user must not have to read. Changes
    nothing where JAX_PLATFORMS or TPU_ACCELERATOR_TYPE is set, where TPU
    device files exist, or where a GPU plugin is installed. True when it chose."""
    import glob
    import importlib.util
    import pkgutil

    if "JAX_PLATFORMS" in environ or "TPU_ACCELERATOR_TYPE" in environ:
        return False
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return False
    if importlib.util.find_spec("libtpu") is None:
        return False
    try:
        import jax_plugins
    except ImportError:
        plugins = []
    else:
        plugins = [module.name for module in pkgutil.iter_modules(jax_plugins.__path__)]
    if any("tpu" not in name for name in plugins):
        return False
    environ["JAX_PLATFORMS"] = "cpu"
    return True


def topology_devices(topology: Topology) -> list:
    """The devices to compile for: a TPU slice's, described by libtpu on any host
    (no TPU needed), or this host's CPU devices for cpu:N."""
    import jax

    if topology.chip is None:
        devices = jax.devices("cpu")
        if len(devices) < topology.chips:
            raise TopologyError(f"{topology.name}: this process has {len(devices)} CPU devices; set "
                                f"XLA_FLAGS=--xla_force_host_platform_device_count={topology.chips} before jax "
                                "starts (codeio-jax train --compile_only does)")
        return devices[:topology.chips]
    try:
        import libtpu  # noqa: F401
    except ImportError:
        raise TopologyError("compiling for a TPU slice needs libtpu: pip install 'codeio-jax[tpu]' "
                            "(or pip install 'jax[tpu]==0.10.2')") from None
    # libtpu probes the host it runs on for its TPU type and peers; on a host
    # without a TPU, say it is the slice asked for and alone, which quiets that probe.
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{topology.chip.name}-{topology.chips * topology.chip.cores_per_chip}")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # libtpu takes a host-wide lock meant for processes that drive the chips; a
    # compile-only process drives none, and several may run side by side.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    options = {"chip_config_name": "megacore"} if topology.chip.cores_per_chip == 2 else {}
    try:
        devices = topologies.get_topology_desc(platform="tpu", topology_name=topology.libtpu_name,
                                               **options).devices
    except Exception as exc:  # libtpu's own errors are runtime errors with its message
        raise TopologyError(f"libtpu cannot describe {topology.name} ({topology.libtpu_name}): {exc}") from None
    if len(devices) != topology.chips:
        raise TopologyError(f"libtpu describes {topology.libtpu_name} with {len(devices)} devices, "
                            f"expected {topology.chips} chips")
    return list(devices)
