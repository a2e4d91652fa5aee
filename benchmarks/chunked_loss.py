"""The chunked loss against the whole-sequence loss: peak resident memory and
tokens/s of a train step on the SmolLM2-135M shape (vocabulary 49,152), CPU.

Each configuration runs in a fresh process (peak RSS is a process's high-water
mark): the jitted step (codeio_jax/training/step.py, float32, AdamW, no remat)
is compiled, then timed over a few steps on synthetic tokens.
  baseline: loss_chunk_length 0 (the [batch, length, vocab] logits at once)
  chunked:  loss_chunk_length 512
at batch 2 x 512 (the baseline's shape in the issue) and 4 x 1024.

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


def run(chunk, batch, length, steps):
    code = CHILD.format(root=str(ROOT), chunk=chunk, batch=batch, length=length, steps=steps)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    if done.returncode:
        raise SystemExit(f"chunk {chunk} batch {batch} x {length} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["tokens_per_s"] = batch * length / row["step_s"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    gib = 1 << 30
    rows = []
    for batch, length in ((2, 512), (4, 1024)):
        for name, chunk in (("whole sequence", 0), ("chunked 512", 512)):
            row = run(chunk, batch, length, args.steps)
            rows.append((f"{batch} x {length}", name, row))
            print(f"  {batch} x {length}  {name:15s} peak {row['peak_rss'] / gib:6.2f} GiB  "
                  f"{row['tokens_per_s']:8.0f} tokens/s  loss {row['loss']:.4f}", file=sys.stderr, flush=True)
    print("\n| batch x length | loss | peak resident | tokens/s |")
    print("|---|---|---|---|")
    for shape, name, row in rows:
        print(f"| {shape} | {name} | {row['peak_rss'] / gib:.2f} GiB | {row['tokens_per_s']:,.0f} |")
    base, chunked = rows[2][2], rows[3][2]
    small = rows[0][2]
    print(f"\nAt 4 x 1024: chunked peak / whole-sequence peak = {chunked['peak_rss'] / base['peak_rss']:.2f}x, "
          f"tokens/s ratio {chunked['tokens_per_s'] / base['tokens_per_s']:.2f}x; chunked at 4 x 1024 against the "
          f"whole-sequence loss at 2 x 512: {chunked['peak_rss'] / small['peak_rss']:.2f}x the memory for 4x the "
          "tokens.")
    print("Same losses in each pair: " + ", ".join(
        f"{rows[i][0]} {abs(rows[i][2]['loss'] - rows[i + 1][2]['loss']):.1e}" for i in (0, 2)))


if __name__ == "__main__":
    main()
