"""The chunked loss and the CPU scheduler against today's step on the SmolLM2-135M
shape (vocabulary 49,152), float32 train step (codeio_jax/training/step.py, AdamW
with clipping), CPU.

Two measurements, each configuration in a fresh process (peak RSS is a process's
high-water mark, and XLA's flags are read when its CPU backend starts):
  1. run: peak resident memory and tokens/s of the jitted step. The baseline is
     the step before this work: batch 2 x 512, no remat, the whole-sequence loss
     (the [batch, length, vocab] logits at once), XLA:CPU's default concurrency
     scheduler. Against it: the chunked loss (128 positions at a time at 2 x 512, 256 at 4 x 1024) with the
     memory-minimising scheduler `codeio-jax train` asks for
     (training/hardware.py), at 2 x 512 and at 4 x 1024 with full remat;
  2. compiled only: XLA's memory analysis of the same steps (per-device total:
     what the compiled program allocates), both schedulers, both losses; shapes
     this machine cannot run are still compiled.

Run: .venv/bin/python benchmarks/chunked_loss.py [--steps 2]
"""

import argparse
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
import jax
from codeio_jax.models.decoder import Decoder
from codeio_jax.models.presets import preset
from codeio_jax.training.input import SyntheticInput
from codeio_jax.training.optimizer import OptimizerConfig, make_optimizer
from codeio_jax.training.step import init_state, train_step

config = preset("smollm2_135m").replace(remat={remat!r})
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
state = init_state(config, tx, 0)
state, metrics = step(state, next(data))
jax.block_until_ready(metrics)
times = []
for _ in range({steps}):
    batch = next(data)
    started = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - started)
times.sort()
print(json.dumps({{"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                   "step_s": times[len(times) // 2], "loss": float(metrics["loss"])}}))
"""
# The scheduler XLA:CPU picks by default, named explicitly so a user's XLA_FLAGS cannot change the baseline.
DEFAULT_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=true"


def child(chunk, remat, batch, length, scheduler, steps=2, compile_only=False) -> dict:
    code = CHILD.format(root=str(ROOT), chunk=chunk, remat=remat, batch=batch, length=length, steps=steps,
                        scheduler=scheduler, compile_only=compile_only)
    env = {"JAX_PLATFORMS": "cpu", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "XLA_FLAGS": DEFAULT_SCHEDULER if scheduler == "default" else ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"chunk {chunk} remat {remat} batch {batch} x {length} scheduler {scheduler} failed "
                         f"(exit {done.returncode}):\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    if not compile_only:
        row["tokens_per_s"] = batch * length / row["step_s"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    print("SmolLM2-135M shape (vocabulary 49,152), float32 train step on CPU\n")
    # A chunk shorter than the sequence (a chunk as long as it is the whole-sequence loss).
    runs = [("before", 0, "none", 2, 512, "default"), ("chunked", 128, "none", 2, 512, "memory"),
            ("after", 256, "full", 4, 1024, "memory")]
    measured = {}
    for name, chunk, remat, batch, length, scheduler in runs:
        measured[name] = row = child(chunk, remat, batch, length, scheduler, args.steps)
        print(f"  ran {name}: peak {row['peak_rss'] / GIB:.2f} GiB, {row['tokens_per_s']:.0f} tokens/s",
              file=sys.stderr, flush=True)
    print("| run | batch | remat | loss chunk | scheduler | peak resident | tokens/s | loss |")
    print("|---|---|---|---|---|---|---|---|")
    for name, chunk, remat, batch, length, scheduler in runs:
        row = measured[name]
        print(f"| {name} | {batch} x {length} | {remat} | {chunk or 'whole'} | {scheduler} | "
              f"{row['peak_rss'] / GIB:.2f} GiB | {row['tokens_per_s']:,.0f} | {row['loss']:.6f} |")
    before = measured["before"]
    for name in ("chunked", "after"):
        row = measured[name]
        print(f"{name} / before: peak {row['peak_rss'] / before['peak_rss']:.2f}x, tokens/s "
              f"{row['tokens_per_s'] / before['tokens_per_s']:.2f}x")
    print(f"loss difference, chunked against before (same batch): "
          f"{abs(measured['chunked']['loss'] - before['loss']):.1e}\n")
    print("| compiled only (XLA's memory analysis) | remat | scheduler | whole loss | chunked | chunked / whole |")
    print("|---|---|---|---|---|---|")
    for remat, batch, length, chunk in (("none", 2, 512, 128), ("full", 4, 1024, 256)):
        for scheduler in ("default", "memory"):
            totals = [child(c, remat, batch, length, scheduler, compile_only=True)["total"] for c in (0, chunk)]
            print(f"| {batch} x {length} | {remat} | {scheduler} | {totals[0] / GIB:.2f} GiB | "
                  f"{totals[1] / GIB:.2f} GiB ({chunk}) | {totals[1] / totals[0]:.2f}x |", flush=True)
    print("\nscheduler: default is XLA:CPU's concurrency-optimised one; memory is "
          "--xla_cpu_enable_concurrency_optimized_scheduler=false, which codeio-jax train sets on a CPU host.")


if __name__ == "__main__":
    main()
