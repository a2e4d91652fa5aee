"""Compile the configured train step for a topology without running it: does a
recipe fit its slice, and what does XLA expect it to cost?

    the gin-configured `train` arguments -> trainer.build_step over the slice's devices
      -> jit(step).lower(abstract state, abstract batch).compile()
      -> per-chip memory (XLA's memory_analysis: exact for the compiled program)
         and cost (XLA's cost_analysis: flops and an estimated step time, a model's guess)

The step is the one `train` runs (the same build_step: mesh, rules, remat,
accumulation, dtypes, attention and MoE implementations), over abstract arrays:
nothing is allocated, no TPU is needed (libtpu describes the slice on any host).
One compiled step is one micro-batch; with accumulation, an optimizer update is
`accumulation_steps` of them.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from typing import Any

from codeio_jax.training import hardware

@dataclasses.dataclass
class CompileReport:
    topology: str
    chips: int
    device_kind: str
    mesh: dict[str, int]
    batch_size: int
    rows_per_chip: int
    length: int
    accumulation_steps: int
    per_chip_bytes: dict[str, int]
    hbm_bytes: int | None
    fits: bool
    headroom: float | None
    xla_flops_per_step: float | None
    model_flops_per_step: float
    estimated_step_s: float | None
    estimated_mfu: float | None
    estimate_note: str | None  # why an estimate is missing
    compile_s: float
    settings: dict[str, Any]
    compiler_refusal: str | None  # the compiler's own words when it refused the program for want of memory
    advice: str | None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def configured_train_arguments() -> dict[str, Any]:
    """What gin binds for `train` (defaults filled in), the inputs reduced to their
    shape: (batch_size, length) are read from the input's bindings without
    constructing it, so a recipe compiles without its data, tokenizer or SeqIO."""
    import gin

    from codeio_jax.training.trainer import train

    raw = gin.get_bindings("train", resolve_references=False)
    inputs = raw.get("inputs")
    if inputs is None:
        raise ValueError("the recipe binds no train.inputs; compile_only needs its batch_size and length")
    selector = getattr(inputs, "selector", None)
    if selector is None:
        raise ValueError("train.inputs must be a configurable reference such as @SeqioInput() to compile only")
    input_cls = gin.get_configurable(selector)
    shape = {name: param.default for name, param in inspect.signature(input_cls).parameters.items()
             if name in ("batch_size", "length")}
    shape.update({k: v for k, v in gin.get_bindings(selector).items() if k in ("batch_size", "length")})
    # Resolve the rest (model, optimizer, mesh) as train would, without the parts
    # that name data, folders or a trained model (their macros may be left unset).
    if raw.get("model") is None:
        raise ValueError("compile_only needs the architecture bound as train.model (a gin/models/*.gin), "
                         "not only train.init_from: nothing is read from checkpoints")
    with gin.unlock_config():
        for name in ("model_dir", "inputs", "evaluate", "init_from", "on_log"):
            if name in raw:
                gin.bind_parameter(f"train.{name}", None)
    resolved = gin.get_bindings("train")
    arguments = {name: param.default for name, param in inspect.signature(train).parameters.items()}
    arguments.update(resolved)
    arguments.update(batch_size=int(shape["batch_size"]), length=int(shape["length"]))
    return arguments


def compile_configured(topology: hardware.Topology) -> CompileReport:
    """Compile the step the parsed gin config's `train` would run, on `topology`."""
    arguments = configured_train_arguments()
    return compile_for(topology, **{name: arguments[name] for name in (
        "model", "mesh", "optimizer", "steps", "batch_size", "length", "seed", "z_loss", "compute_dtype", "remat",
        "attention_impl", "moe_impl", "loss_chunk_length", "scan_layers", "lora")})


def compile_for(topology: hardware.Topology, model, mesh, optimizer, steps: int, batch_size: int, length: int,
                seed: int = 0, z_loss: float = 0.0, compute_dtype: str = "bfloat16", remat: str | None = None,
                attention_impl: str | None = None, moe_impl: str | None = None,
                loss_chunk_length: int = 512, scan_layers: bool | None = None, lora=None) -> CompileReport:
    """Compile the step `train` would build for these arguments on `topology` (with
    `lora`, the adapters' step: the frozen base is one of its arguments)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from codeio_jax.training.step import BATCH_KEYS, flops_per_token
    from codeio_jax.training.trainer import build_step

    devices = hardware.topology_devices(topology)
    setup = build_step(model, mesh, optimizer, steps, seed, z_loss, compute_dtype, remat, attention_impl, moe_impl,
                       loss_chunk_length, devices=devices, scan_layers=scan_layers, lora=lora)
    mesh_shape = dict(setup.mesh.shape)
    batch_shards = math.prod(mesh_shape[axis] for axis in setup.batch_sharding.spec[0] or ())
    if batch_size % batch_shards:
        raise hardware.TopologyError(f"batch_size {batch_size} does not split over the {batch_shards} devices the "
                                     f"batch is sharded on ({_axes(setup.batch_sharding.spec[0], mesh_shape)})")
    batch = {key: jax.ShapeDtypeStruct((batch_size, length), jnp.int32, sharding=setup.batch_sharding)
             for key in BATCH_KEYS}
    state = setup.abstract_state()
    started = time.perf_counter()
    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
        lowered = setup.step_fn.lower(state, batch, setup.abstract_frozen())
        try:
            compiled = lowered.compile()
        except Exception as exc:  # the TPU compiler refuses a program that cannot fit its HBM
            if "RESOURCE_EXHAUSTED" not in str(exc):
                raise
            compiled, exhausted = None, str(exc)
    compile_s = time.perf_counter() - started
    if compiled is not None:
        attention_ran = _attention_kernel(compiled.as_text())
        memory = compiled.memory_analysis()
        per_chip = {
            "arguments": int(memory.argument_size_in_bytes),
            "outputs": int(memory.output_size_in_bytes),
            "aliased": int(memory.alias_size_in_bytes),  # outputs written over donated arguments: counted once
            "temporaries": int(memory.temp_size_in_bytes),
            "generated_code": int(memory.generated_code_size_in_bytes),
        }
        per_chip["total"] = (per_chip["arguments"] + per_chip["outputs"] - per_chip["aliased"]
                             + per_chip["temporaries"] + per_chip["generated_code"])
    else:
        attention_ran = _attention_kernel(lowered.as_text())
        per_chip = _exhausted_memory(exhausted, _shard_bytes((state, batch)))
    cost = _cost(compiled) if compiled is not None else {}
    chips = len(devices)
    model_flops = flops_per_token(setup.config, length) * batch_size * length
    capacity = topology.chip.hbm_bytes if topology.chip else _host_memory_per_device(chips)
    headroom = 1.0 - per_chip["total"] / capacity if capacity else None
    fits = compiled is not None and (headroom is None or headroom >= 0.0)
    xla_flops = cost["flops"] * chips if "flops" in cost else None
    peak = topology.chip.peak_bf16_flops if topology.chip else None
    estimated_s, mfu, estimate_note = credible_estimates(cost.get("optimal_seconds"), xla_flops, model_flops,
                                                         chips, peak)
    config = setup.config
    settings = {"model": f"{config.family} {config.num_layers} layers, hidden {config.hidden_size}",
                "compute_dtype": config.dtype, "remat": config.remat, "attention_impl": config.attention_impl,
                "attention_kernel": attention_ran,
                "moe_impl": config.moe_impl if config.moe is not None else None,
                "loss_chunk_length": loss_chunk_length, "scan_layers": config.scan_layers}
    report = CompileReport(
        topology=topology.name, chips=chips, device_kind=devices[0].device_kind, mesh=mesh_shape,
        batch_size=batch_size, rows_per_chip=batch_size // batch_shards, length=length,
        accumulation_steps=optimizer.accumulation_steps,
        per_chip_bytes=per_chip, hbm_bytes=capacity, fits=fits, headroom=headroom,
        xla_flops_per_step=xla_flops, model_flops_per_step=model_flops,
        estimated_step_s=estimated_s, estimated_mfu=mfu, estimate_note=estimate_note, compile_s=compile_s,
        settings=settings,
        compiler_refusal=_first_line(exhausted) if compiled is None else None, advice=None)
    if not fits:
        report.advice = advice(report)
    return report


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if "RESOURCE_EXHAUSTED" in line]
    return (lines or [message.strip()])[0][:500]


def _shard_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded jax.ShapeDtypeStructs (its biggest shard)."""
    import jax

    return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
               for leaf in jax.tree_util.tree_leaves(tree))


_SIZE = r"([\d.]+)([KMGT]?)"


def _exhausted_memory(message: str, arguments: int) -> dict[str, int]:
    """Per-chip bytes of a program the compiler refused for want of memory: the
    arguments from their shardings, the temporaries and the total from the
    compiler's message where it gives them."""
    import re

    def size(number: str, unit: str) -> int:
        return int(float(number) * 1024 ** " KMGT".index(unit or " "))

    temporaries = re.search(r"HLO temporaries \(" + _SIZE + r"\)", message)
    used = re.search(r"Used " + _SIZE + r" of " + _SIZE, message)
    per_chip = {"arguments": arguments, "outputs": 0, "aliased": 0, "generated_code": 0,
                "temporaries": size(*temporaries.groups()) if temporaries else 0}
    per_chip["total"] = size(*used.groups()[:2]) if used else arguments + per_chip["temporaries"]
    return per_chip


# Below this share of the model's FLOPs in XLA's count, its cost model is missing
# work and its time estimate cannot give an MFU.
MIN_COUNTED_SHARE = 0.9


def credible_estimates(optimal_s: float | None, xla_flops: float | None, model_flops: float, chips: int,
                       peak: float | None) -> tuple[float | None, float | None, str | None]:
    """(estimated step s, estimated MFU, why one is missing) from XLA's cost model.
    XLA does not count the work inside custom kernels (splash, megablox) and counts
    a loop's body once (the chunked loss's scan); where its FLOPs fall short of the
    model's, the time it estimates is for part of the step, so no MFU is derived."""
    if not optimal_s or optimal_s <= 0:
        return None, None, "XLA's cost model gives no step time for this program"
    if not peak:
        return optimal_s, None, "no bf16 peak known for these devices"
    if not xla_flops or xla_flops < MIN_COUNTED_SHARE * model_flops:
        share = f"{xla_flops / model_flops:.0%}" if xla_flops else "none"
        return optimal_s, None, (f"XLA counts {share} of the model's FLOPs (custom kernels and loop bodies are "
                                 "not counted in full), so its time is for part of the step")
    return optimal_s, model_flops / (optimal_s * chips * peak), None


def _attention_kernel(hlo: str) -> str:
    """Which attention the compiled program runs (auto and fallbacks decide at trace time)."""
    if "splash" in hlo:
        return "splash"
    if "cudnn$fmha" in hlo:
        return "cudnn"
    return "xla"


def _cost(compiled) -> dict[str, float]:
    """XLA's cost analysis of the per-device program (a dict, or a list of one per program)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return {key: float(value) for key, value in (cost or {}).items() if key in ("flops", "optimal_seconds")}


def _axes(spec, mesh_shape) -> str:
    axes = spec if isinstance(spec, tuple) else (spec,)
    return " x ".join(f"{axis} {mesh_shape[axis]}" for axis in axes if axis)


def _host_memory_per_device(devices: int) -> int | None:
    """Fake CPU devices share this host's memory."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // devices
    except (ValueError, OSError):
        return None


def advice(report: CompileReport) -> str:
    """One sentence naming the biggest consumer of a chip's memory and what to change.
    (Outputs are the updated state, written over the donated arguments.)"""
    parts = report.per_chip_bytes
    state = parts["arguments"]
    activations = parts["temporaries"]
    gib = 1 << 30
    over = f"needs {parts['total'] / gib:.1f} GiB per chip of {report.hbm_bytes / gib:.1f} GiB"
    if state >= activations:
        fsdp = report.mesh.get("fsdp", 1)
        return (f"{over}; the biggest part is the parameters and optimizer state ({state / gib:.1f} GiB): shard "
                f"them over more chips (MeshConfig.fsdp = -1, now {fsdp}; a larger slice) or add "
                f"MeshConfig.tensor")
    changes = []
    if report.settings["remat"] != "full":
        changes.append(f"save fewer activations (train.remat = 'full', now {report.settings['remat']!r})")
    if report.rows_per_chip > 1:
        changes.append(f"use fewer rows per chip ({report.rows_per_chip} now: lower SeqioInput.batch_size and raise "
                       "OptimizerConfig.accumulation_steps to keep the global batch)")
    if (report.settings["remat"] != "none" and not report.settings["scan_layers"]
            and report.device_kind.lower() == "cpu"):
        # XLA:CPU keeps every unrolled layer's activations alive even under remat.
        changes.append("run the layers as a scan (train.scan_layers = True)")
    if report.settings["attention_kernel"] == "xla" and report.device_kind.startswith("TPU"):
        changes.append("fused attention (train.attention_impl = 'splash')")
    changes.append("a shorter sequence or tensor parallelism (MeshConfig.tensor)")
    return (f"{over}; the biggest part is the step's temporaries, mostly activations ({activations / gib:.1f} GiB): "
            + ", or ".join(changes))
