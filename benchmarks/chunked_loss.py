"""The chunked loss against the whole-sequence loss on the SmolLM2-135M shape
(vocabulary 49,152), float32 train step (codeio_jax/training/step.py, AdamW), CPU.

Two measurements, each against its baseline in the same run:
  1. run: peak resident memory and tokens/s of the jitted step, each configuration
     in a fresh process (peak RSS is a process's high-water mark), at batch 2 x 512
     without remat: loss_chunk_length 0 (the [batch, length, vocab] logits at once)
     against 512;
  2. compiled only: XLA's memory analysis of the same step (per-device total: what
     the compiled program allocates) at 2 x 512 and at 4 x 1024 with full remat,
     both losses; shapes this machine cannot run are still compiled.

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
# The compiled-only part runs in this process, on the CPU (and without libtpu's host probe).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

CHILD = r"""
import functools, json, resource, sys, time
sys.path.insert(0, {root!r})
import jax
from codeio_jax.models.decoder import Decoder
from codeio_jax.models.presets import preset
from codeio_jax.training.input import SyntheticInput
from codeio_jax.training.optimizer import OptimizerConfig, make_optimizer
from codeio_jax.training.step import init_state, train_step

config = preset("smollm2_135m").replace(remat={remat!r})
tx, schedule = make_optimizer(OptimizerConfig(learning_rate=1e-4, warmup_steps=0), 100)
state = init_state(config, tx, 0)
step = jax.jit(functools.partial(train_step, model=Decoder(config), optimizer=tx, schedule=schedule,
                                 loss_chunk_length={chunk}), donate_argnums=0)
data = SyntheticInput(config.vocab_size, {length}, {batch})
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


def run(chunk, remat, batch, length, steps):
    code = CHILD.format(root=str(ROOT), chunk=chunk, remat=remat, batch=batch, length=length, steps=steps)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"JAX_PLATFORMS": "cpu", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    if done.returncode:
        raise SystemExit(f"chunk {chunk} remat {remat} batch {batch} x {length} failed (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["tokens_per_s"] = batch * length / row["step_s"]
    return row


def compiled_total(chunk, remat, batch, length) -> int:
    """XLA's per-device total for the step (codeio_jax/training/compile_check.py on one CPU device)."""
    sys.path.insert(0, str(ROOT))
    from codeio_jax.models.presets import preset
    from codeio_jax.training import hardware
    from codeio_jax.training.compile_check import compile_for
    from codeio_jax.training.optimizer import OptimizerConfig
    from codeio_jax.training.partitioning import MeshConfig

    report = compile_for(hardware.parse_topology("cpu:1"), preset("smollm2_135m"), MeshConfig(), OptimizerConfig(),
                         100, batch, length, compute_dtype="float32", remat=remat, attention_impl="xla",
                         loss_chunk_length=chunk)
    return report.per_chip_bytes["total"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    print("SmolLM2-135M shape (vocabulary 49,152), float32 train step on CPU\n")
    measured = {}
    for chunk in (0, 512):
        measured[chunk] = row = run(chunk, "none", 2, 512, args.steps)
        print(f"  ran chunk {chunk}: peak {row['peak_rss'] / GIB:.2f} GiB, {row['tokens_per_s']:.0f} tokens/s",
              file=sys.stderr, flush=True)
    print("| 2 x 512, no remat, run | loss chunk | peak resident | tokens/s | loss |")
    print("|---|---|---|---|---|")
    for chunk, row in measured.items():
        print(f"| | {chunk or 'whole'} | {row['peak_rss'] / GIB:.2f} GiB | {row['tokens_per_s']:,.0f} | "
              f"{row['loss']:.6f} |")
    whole, chunked = measured[0], measured[512]
    print(f"\nchunked / whole: peak {chunked['peak_rss'] / whole['peak_rss']:.2f}x, tokens/s "
          f"{chunked['tokens_per_s'] / whole['tokens_per_s']:.2f}x, loss difference "
          f"{abs(chunked['loss'] - whole['loss']):.1e}\n")
    print("| compiled only (XLA's memory analysis) | remat | whole loss | chunked 512 | chunked / whole |")
    print("|---|---|---|---|---|")
    for remat, batch, length in (("none", 2, 512), ("full", 4, 1024)):
        totals = [compiled_total(chunk, remat, batch, length) for chunk in (0, 512)]
        print(f"| {batch} x {length} | {remat} | {totals[0] / GIB:.2f} GiB | {totals[1] / GIB:.2f} GiB | "
              f"{totals[1] / totals[0]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
