"""A train step on the SmolLM2-135M shape (vocabulary 49,152) on CPU, float32
(codeio_jax/training/step.py, AdamW with clipping): what each of the memory
measures of `codeio-jax train` does to its peak resident memory and speed.

The measures: the chunked loss (the [batch, length, vocab] logits a chunk of
positions at a time), XLA:CPU's memory-minimising scheduler (training/hardware.py),
full remat, the layers as a scan (ModelConfig.scan_layers), attention by blocks
of 256 query rows (XlaAttentionSettings.query_block), and the compiler's freed
memory handed back before the step runs (the trainer does it on a CPU host).

Two measurements, each configuration in a fresh process (peak RSS is a process's
high-water mark, and XLA's flags are read when its CPU backend starts):
  1. run: peak resident memory and tokens/s, the state initialised and the step
     compiled as the trainer does. The baseline is the step before these
     measures: batch 2 x 512, no remat, the whole-sequence loss, XLA:CPU's default
     concurrency scheduler, unrolled layers. Against it: the chunked loss with the
     memory scheduler at the same batch, and at 4 x 1024 every measure, then every
     measure but the scan;
  2. compiled only: XLA's memory analysis of the steps (per-device total: what the
     compiled program allocates), both schedulers, whole and chunked loss.

Run: .venv/bin/python benchmarks/chunked_loss.py [--steps 2]
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30

CHILD = r"""
import functools, json, os, resource, sys, time
sys.path.insert(0, {root!r})
from codeio_jax.training import hardware
if {scheduler!r} == "memory":
    hardware.prefer_memory_scheduler_on_cpu()
import gin
import jax
from codeio_jax.models.decoder import Decoder
from codeio_jax.models.presets import preset
from codeio_jax.training.input import SyntheticInput
from codeio_jax.training.optimizer import OptimizerConfig, make_optimizer
from codeio_jax.training.step import init_state, train_step

gin.bind_parameter("XlaAttentionSettings.query_block", {query_block!r})
config = preset("smollm2_135m").replace(remat={remat!r}, scan_layers={scan!r})
tx, schedule = make_optimizer(OptimizerConfig(learning_rate=1e-4, warmup_steps=0), 100)
step = jax.jit(functools.partial(train_step, model=Decoder(config), optimizer=tx, schedule=schedule,
                                 loss_chunk_length={chunk}), donate_argnums=0)
data = SyntheticInput(config.vocab_size, {length}, {batch})
if {compile_only!r}:
    state = jax.eval_shape(lambda: init_state(config, tx, 0))
    analysis = step.lower(state, next(data)).compile().memory_analysis()
    print(json.dumps({{"total": analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                                - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes
                                + analysis.generated_code_size_in_bytes}}))
    sys.exit(0)
state = jax.jit(lambda: init_state(config, tx, 0))()
batch = next(data)
compiled = step.lower(state, batch).compile()
if {trim!r}:
    hardware.return_freed_memory_to_the_system()
state, metrics = compiled(state, batch)
jax.block_until_ready(metrics)
times = []
for _ in range({steps}):
    batch = next(data)
    started = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - started)
times.sort()
print(json.dumps({{"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                   "step_s": times[len(times) // 2], "loss": float(metrics["loss"])}}))
"""
# The scheduler XLA:CPU picks by default, named explicitly so a user's XLA_FLAGS cannot change the baseline.
DEFAULT_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=true"


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    batch: int
    length: int
    chunk: int = 0  # loss positions at once; 0: the whole sequence
    remat: str = "none"
    scheduler: str = "default"
    scan: bool = False
    query_block: int = 0
    trim: bool = False

    def describe(self) -> str:
        return (f"| {self.name} | {self.batch} x {self.length} | {self.remat} | "
                f"{'scanned' if self.scan else 'unrolled'} | {self.query_block or 'whole'} | "
                f"{self.chunk or 'whole'} | {self.scheduler} | {'yes' if self.trim else 'no'} |")


def child(run: Run, steps=2, compile_only=False, chunk=None) -> dict:
    fields = {**dataclasses.asdict(run), "chunk": run.chunk if chunk is None else chunk}
    fields.pop("name")
    code = CHILD.format(root=str(ROOT), steps=steps, compile_only=compile_only, **fields)
    env = {"JAX_PLATFORMS": "cpu", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "XLA_FLAGS": DEFAULT_SCHEDULER if run.scheduler == "default" else ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{run} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    if not compile_only:
        row["tokens_per_s"] = run.batch * run.length / row["step_s"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    print("SmolLM2-135M shape (vocabulary 49,152), float32 train step on CPU\n")
    every = dict(remat="full", scheduler="memory", query_block=256, trim=True)
    runs = [Run("before", 2, 512),
            Run("chunked", 2, 512, chunk=128, scheduler="memory"),
            Run("after", 4, 1024, chunk=256, scan=True, **every),
            Run("after, unrolled layers", 4, 1024, chunk=256, **every)]
    measured = {}
    for run in runs:
        measured[run.name] = row = child(run, args.steps)
        print(f"  ran {run.name}: peak {row['peak_rss'] / GIB:.2f} GiB, {row['tokens_per_s']:.0f} tokens/s",
              file=sys.stderr, flush=True)
    print("| run | batch | remat | layers | attention rows | loss chunk | scheduler | freed memory returned | "
          "peak resident | tokens/s | loss |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        row = measured[run.name]
        print(f"{run.describe()} {row['peak_rss'] / GIB:.2f} GiB ({row['peak_rss'] / 1e9:.2f} GB) | "
              f"{row['tokens_per_s']:,.0f} | {row['loss']:.6f} |")
    before = measured["before"]
    for run in runs[1:]:
        row = measured[run.name]
        print(f"{run.name} / before: peak {row['peak_rss'] / before['peak_rss']:.2f}x, tokens/s "
              f"{row['tokens_per_s'] / before['tokens_per_s']:.2f}x")
    print(f"loss difference, chunked against before (same batch): "
          f"{abs(measured['chunked']['loss'] - before['loss']):.1e}")
    print(f"loss difference, scanned against unrolled layers (same batch): "
          f"{abs(measured['after']['loss'] - measured['after, unrolled layers']['loss']):.1e}\n")
    print("| compiled only (XLA's memory analysis) | remat | layers | attention rows | scheduler | whole loss | "
          "chunked | chunked / whole |")
    print("|---|---|---|---|---|---|---|---|")
    for run in (Run("", 2, 512, chunk=128), Run("", 4, 1024, chunk=256, remat="full"),
                Run("", 4, 1024, chunk=256, remat="full", scan=True, query_block=256)):
        for scheduler in ("default", "memory"):
            variant = dataclasses.replace(run, scheduler=scheduler)
            totals = [child(variant, compile_only=True, chunk=c)["total"] for c in (0, run.chunk)]
            print(f"| {run.batch} x {run.length} | {run.remat} | {'scanned' if run.scan else 'unrolled'} | "
                  f"{run.query_block or 'whole'} | {scheduler} | {totals[0] / GIB:.2f} GiB | "
                  f"{totals[1] / GIB:.2f} GiB ({run.chunk}) | {totals[1] / totals[0]:.2f}x |", flush=True)
    print("\nscheduler: default is XLA:CPU's concurrency-optimised one; memory is "
          "--xla_cpu_enable_concurrency_optimized_scheduler=false, which codeio-jax train sets on a CPU host. "
          "freed memory returned: hardware.return_freed_memory_to_the_system() between compiling and running.")


if __name__ == "__main__":
    main()
