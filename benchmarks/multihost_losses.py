"""2 processes x 4 CPU devices against 1 process x 8 on the same recipe, step
for step: the losses and gradient norms side by side, their largest
differences, and the wall time of each run against the 1-process run.

The recipe: gin/train/smoke_cpu.gin (tiny Llama, synthetic tokens, 8 x 128
per step), 8 steps, every step logged. The two processes talk over loopback
(jax.distributed, gloo collectives), started through `codeio-jax train` with
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID. The numbers
should agree to float32 rounding: the all-reduces add the devices' partial
sums in another order across processes (gloo) than within one (XLA).

Run: .venv/bin/python benchmarks/multihost_losses.py
"""

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.training.test_multihost import metrics, run_job, train_command  # noqa: E402

STEPS = 8


def run(tmp: Path, processes: int, devices: int) -> tuple[dict[int, dict], float]:
    name = f"{processes}x{devices}"
    command = train_command("--gin_file", "train/smoke_cpu.gin", f"--gin.MODEL_DIR='{tmp / name}'",
                            f"--gin.train.steps={STEPS}", "--gin.train.log_every=1", "--gin.train.checkpoint_every=0")
    started = time.perf_counter()
    for process, result in enumerate(run_job(command, processes, devices, tmp / f"logs-{name}")):
        if result.returncode:
            raise SystemExit(f"{name}, process {process} failed:\n{result.stderr[-3000:]}")
    return metrics(tmp / name), time.perf_counter() - started


def main():
    tmp = Path(tempfile.mkdtemp(prefix="bench-multihost-"))
    one, one_s = run(tmp, 1, 8)
    two, two_s = run(tmp, 2, 4)
    print(f"gin/train/smoke_cpu.gin, synthetic input, {STEPS} steps: 1 process x 8 CPU devices vs 2 x 4 (loopback)\n")
    print(f"{'step':>4}  {'loss 1x8':>12}  {'loss 2x4':>12}  {'grad_norm 1x8':>13}  {'grad_norm 2x4':>13}")
    for step in sorted(one):
        print(f"{step:>4}  {one[step]['loss']:>12.8f}  {two[step]['loss']:>12.8f}  "
              f"{one[step]['grad_norm']:>13.8f}  {two[step]['grad_norm']:>13.8f}")
    for name in ("loss", "grad_norm"):
        worst = max(abs(two[step][name] - one[step][name]) for step in one)
        relative = max(abs(two[step][name] - one[step][name]) / abs(one[step][name]) for step in one)
        print(f"max |{name} 2x4 - {name} 1x8| = {worst:.3g} (relative {relative:.3g})")
    print(f"wall time, start to exit: 1x8 {one_s:.1f} s, 2x4 {two_s:.1f} s ({two_s / one_s:.2f}x)")


if __name__ == "__main__":
    main()
