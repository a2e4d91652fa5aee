"""The toy GRPO recipe against its zero-learning-rate control, same run.

    run:      codeio-jax rl --gin_file rl/toy_cpu.gin
              (a supervised warm-up on a teacher right 60% of the time, then GRPO
              on the verified reward alone)
    control:  the same recipe from the run's warmed-up policy (rl.init_from =
              run/warmed_up, no warm-up of its own), learning rate 0: the same
              start, the same prompts and rollout seeds, no learning

Both measure the verified reward on the recipe's 48 held-out functions (4
completions each, sampled as the rollouts are, the same seeds at every
measurement) at their first step and every 10 steps. The control's numbers must
equal the run's first one throughout (the same start, a policy that does not
move): the script checks this and exits 1 otherwise.

Printed: held-out reward per measured step for both, the run's gain over the
control (difference and ratio), pass rates by task at the end, wall times.
Writes benchmarks/results/rl_toy.md.
Run: .venv/bin/python benchmarks/rl_toy.py [--steps 60]
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "rl_toy.md"

from smollm2_speed import machine  # noqa: E402 (where the warm-up ends depends on the CPU)


def run(model_dir: Path, tokenizer: Path, steps: int, *flags: str) -> tuple[list[dict], float]:
    command = [sys.executable, "-m", "codeio_jax.cli", "rl", "--gin_file", "rl/toy_cpu.gin",
               f"--gin.MODEL_DIR='{model_dir}'", f"--gin.byte_tokenizer.folder='{tokenizer}'",
               f"--gin.rl.steps={steps}", *flags]
    print(f"[{model_dir.name}] {shlex.join(command[2:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=sys.stderr)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return rows, wall


def heldout(rows: list[dict]) -> dict[int, float]:
    """step -> held-out reward; the first row's is measured before its update (step 0)."""
    out = {0: rows[0]["heldout_reward"]}
    for row in rows[1:]:
        if "heldout_reward" in row:
            out[row["step"]] = row["heldout_reward"]
    return out


def final_pass_rates(rows: list[dict], last: int) -> str:
    window = [row for row in rows if row["step"] > last - 10]
    tasks = sorted({key for row in window for key in row if key.startswith("pass_rate/")})
    return ", ".join(f"{task.split('/')[1]} {sum(row.get(task, 0.0) for row in window) / len(window):.3f}"
                     for task in tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="GRPO steps of both runs (the recipe's 60)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-rl-toy-"))
    try:
        tokenizer = work / "tokenizer"
        run_rows, run_wall = run(work / "run", tokenizer, args.steps)
        control_rows, control_wall = run(work / "control", tokenizer, args.steps,
                                         f"--gin.rl.init_from='{work / 'run' / 'warmed_up'}'",
                                         "--gin.rl.warmup_steps=0", "--gin.OptimizerConfig.learning_rate=0.0")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ran, control = heldout(run_rows), heldout(control_rows)
    start = ran[0]
    steady = all(value == start for value in control.values())
    end = max(ran)
    lines = [
        "The toy GRPO recipe (gin/rl/toy_cpu.gin: tiny_qwen2, byte tokenizer, one-line functions, a 400-step "
        "warm-up on a teacher right 60% of the time, then GRPO 8 prompts x 8 completions per step) against its "
        "zero-learning-rate control from the same warmed-up policy, same seeds; verified reward on 48 held-out "
        "functions, 4 sampled completions each, same seeds at every measurement",
        "",
        "| step | held-out reward, GRPO | held-out reward, control (lr 0) | GRPO - control | GRPO / control |",
        "|---|---|---|---|---|",
    ]
    for step in sorted(ran):
        value, base = ran[step], control.get(step)
        if base is None:
            lines.append(f"| {step} | {value:.3f} | - | - | - |")
        else:
            lines.append(f"| {step} | {value:.3f} | {base:.3f} | {value - base:+.3f} | {value / base:.2f}x |")
    lines += [
        "",
        f"before and after: GRPO {start:.3f} -> {ran[end]:.3f} ({ran[end] / start:.2f}x); control "
        f"{control[0]:.3f} -> {control[max(control)]:.3f}; the control measured its start at every step: "
        f"{'yes' if steady else 'NO'}",
        f"sampled pass rate over the last 10 steps: GRPO {final_pass_rates(run_rows, end)}; control "
        f"{final_pass_rates(control_rows, max(control))}",
        f"wall time: GRPO run {run_wall:.0f} s (warm-up, {args.steps} steps, held-out measurements, process "
        f"start); control {control_wall:.0f} s (no warm-up)",
        "",
        f"machine: {os.cpu_count()} CPUs, {machine()['model']}; load average at the "
        f"start {' '.join(f'{x:.2f}' for x in load)}",
        f"command: {shlex.join(['.venv/bin/python', os.path.relpath(__file__, ROOT)] + sys.argv[1:])}",
    ]
    text = "\n".join(lines)
    print(text)
    args.results.write_text(text + "\n")
    return 0 if steady else 1


if __name__ == "__main__":
    sys.exit(main())
