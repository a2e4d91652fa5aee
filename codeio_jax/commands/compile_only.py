"""`codeio-jax train --compile_only --topology NAME`: compile the configured step
for a TPU slice (or N fake CPU devices) and say whether it fits.

Prints a table and one JSON object (the last line of stdout); exit 0 when it
fits, 3 when it does not, with the sentence that says what to change.
"""

from __future__ import annotations

import json
import os
import re

from codeio_jax.commands.common import CommandError, parse_gin_flags

DOES_NOT_FIT = 3
GIB = 1 << 30


def compile_only(args) -> int:
    if not args.topology:
        raise CommandError("--compile_only needs --topology, e.g. v5p-64, v6e-256, v5e-16 or cpu:8")
    from codeio_jax.training import hardware

    try:
        topology = hardware.parse_topology(args.topology)
    except hardware.TopologyError as exc:
        raise CommandError(str(exc)) from None
    # The step is compiled over described devices, never run: keep jax off any
    # accelerator this host has (a TPU VM's chips may be busy training), and give
    # the CPU the devices cpu:N asks for, both before jax starts.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    hardware.prefer_memory_scheduler_on_cpu()  # as train does: the CPU figures are train's
    if topology.chip is None:
        flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={topology.chips}".strip()
    parse_gin_flags(args, register_training=True)
    from codeio_jax.training.compile_check import compile_configured

    try:
        report = compile_configured(topology)
    except ValueError as exc:  # TopologyError, a mesh that does not divide the slice, a bad config
        raise CommandError(str(exc)) from None
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    print(json.dumps(report.to_json()), flush=True)
    return 0 if report.fits else DOES_NOT_FIT


def format_report(report) -> str:
    b = report.per_chip_bytes
    mesh = " x ".join(f"{axis} {size}" for axis, size in report.mesh.items())
    capacity = f"{report.hbm_bytes / GIB:.1f} GiB" if report.hbm_bytes else "unknown"
    headroom = f"{100 * report.headroom:.1f}%" if report.headroom is not None else "n/a"
    rows = [
        ("topology", f"{report.topology} ({report.chips} x {report.device_kind})"),
        ("mesh", mesh),
        ("step", f"batch {report.batch_size} x length {report.length}"
                 + (f", {report.accumulation_steps} micro-steps an update" if report.accumulation_steps > 1 else "")),
        ("settings", ", ".join(f"{k} {v}" for k, v in report.settings.items() if v is not None)),
        ("per chip: arguments", f"{b['arguments'] / GIB:.2f} GiB"),
        ("per chip: outputs", f"{b['outputs'] / GIB:.2f} GiB ({b['aliased'] / GIB:.2f} GiB written over donated "
                              "arguments)"),
        ("per chip: temporaries", f"{b['temporaries'] / GIB:.2f} GiB"),
        ("per chip: total", f"{b['total'] / GIB:.2f} GiB of {capacity} (headroom {headroom})"),
        ("fits", "yes" if report.fits else "NO"),
        ("model FLOPs a step", f"{report.model_flops_per_step:.3e}"),
        ("XLA FLOPs a step", f"{report.xla_flops_per_step:.3e}" if report.xla_flops_per_step else "n/a"),
        ("estimated step time", f"{_seconds(report.estimated_step_s)} (XLA's cost model: an estimate)"
         if report.estimated_step_s else "n/a"),
        ("estimated MFU", f"{100 * report.estimated_mfu:.1f}% (from the estimated step time)"
         if report.estimated_mfu else f"n/a ({report.estimate_note})"),
        ("compile time", f"{report.compile_s:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    if report.compiler_refusal:
        lines.append(f"the compiler: {report.compiler_refusal}")
    if report.advice:
        lines.append(f"does not fit: {report.advice}")
    return "\n".join(lines)


def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value >= 0.1 else f"{value * 1e3:.3f} ms"
