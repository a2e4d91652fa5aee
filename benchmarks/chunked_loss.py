"""The chunked loss against the whole-sequence loss: peak resident memory and
tokens/s of a train step on the SmolLM2-135M shape (vocabulary 49,152), CPU.

Each configuration runs in a fresh process (peak RSS is a process's high-water
mark): the jitted step (codeio_jax/training/step.py, float32, AdamW) is
compiled, then timed over a few steps on synthetic tokens.
  today:    the whole-sequence loss (loss_chunk_length 0), no remat, batch 2 x 512
  baseline: the whole-sequence loss, full remat, batch 4 x 1024
  chunked:  loss_chunk_length 512, full remat, batch 4 x 1024
The chunked loss is compared with the baseline at the same shape and remat (its
own effect), and with today's step at a quarter of the tokens.

Run: .venv/bin/python benchmarks/chunked_loss.py [--steps 3]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import functools, json, resource, sys, time
sys.path.insert(0, {root!r})
import jax
from codeio_jax.models.decoder import Decoder
from codeio_jax.models.presets import preset
from codeio_jax.training.input import SyntheticInput
from codeio_jax.training.optimizer import OptimizerConfig, make_optimizer
from codeio_jax.training.step import init_state, train_step

config = preset("smollm2_135m")
tx, schedule = make_optimizer(OptimizerConfig(learning_rate=1e-4, warmup_steps=0), 100)
state = init_state(config, tx, 0)
config = config.replace(remat={remat!r})
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
                          env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    if done.returncode:
        raise SystemExit(f"chunk {chunk} remat {remat} batch {batch} x {length} failed (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["tokens_per_s"] = batch * length / row["step_s"]
    return row


CASES = (("today", 0, "none", 2, 512), ("baseline", 0, "full", 4, 1024), ("chunked", 512, "full", 4, 1024))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    gib = 1 << 30
    rows = {}
    for name, chunk, remat, batch, length in CASES:
        rows[name] = row = run(chunk, remat, batch, length, args.steps)
        print(f"  {name:9s} chunk {chunk:4d} remat {remat:5s} {batch} x {length:5d}  peak "
              f"{row['peak_rss'] / gib:6.2f} GiB  {row['tokens_per_s']:8.0f} tokens/s  loss {row['loss']:.4f}",
              file=sys.stderr, flush=True)
    print("\nSmolLM2-135M shape (vocabulary 49,152), float32 train step on CPU\n")
    print("| run | loss chunk | remat | batch x length | peak resident | tokens/s |")
    print("|---|---|---|---|---|---|")
    for (name, chunk, remat, batch, length) in CASES:
        row = rows[name]
        print(f"| {name} | {chunk or 'whole'} | {remat} | {batch} x {length} | {row['peak_rss'] / gib:.2f} GiB | "
              f"{row['tokens_per_s']:,.0f} |")
    chunked, base, today = rows["chunked"], rows["baseline"], rows["today"]
    print(f"\nchunked / baseline (same shape, same remat): peak {chunked['peak_rss'] / base['peak_rss']:.2f}x, "
          f"tokens/s {chunked['tokens_per_s'] / base['tokens_per_s']:.2f}x, loss difference "
          f"{abs(chunked['loss'] - base['loss']):.1e}")
    print(f"chunked at 4 x 1024 / today at 2 x 512: peak {chunked['peak_rss'] / today['peak_rss']:.2f}x for 4x the "
          f"tokens, tokens/s {chunked['tokens_per_s'] / today['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
