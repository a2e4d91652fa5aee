"""Kill -9 in the middle of a training run, resume, compare every later loss
with an uninterrupted run's, bit for bit (CPU).

The run: gin/train/smoke_cpu.gin (tiny Llama, synthetic tokens), 40 steps, a
checkpoint every 5, every step logged. Baseline: the same run uninterrupted,
in the same session. Three interrupted runs, each SIGKILLed at a random logged
step, then started again with the same command.

Run: .venv/bin/python benchmarks/train_resume.py
"""

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY, TRIALS = 40, 5, 3


def command(model_dir):
    return [sys.executable, "-m", "codeio_jax.cli", "train", "--gin_file", "train/smoke_cpu.gin",
            f"--gin.MODEL_DIR='{model_dir}'", f"--gin.train.steps={STEPS}", "--gin.train.log_every=1",
            f"--gin.train.checkpoint_every={EVERY}", "--gin.train.async_checkpoints=False"]


def rows(model_dir):
    path = Path(model_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def main():
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-resume-"))
    subprocess.run(command(tmp / "reference"), cwd=ROOT, check=True, capture_output=True)
    expected = {row["step"]: row["loss"] for row in rows(tmp / "reference")}
    print(f"uninterrupted: {len(expected)} steps logged\n")
    print(f"{'trial':>5}{'killed after step':>19}{'resumed from':>14}{'steps compared':>16}{'bit-identical':>15}")
    rng = random.Random(7)
    identical = 0
    for trial in range(1, TRIALS + 1):
        work = tmp / f"killed{trial}"
        target = rng.randint(EVERY + 1, STEPS - 2)
        process = subprocess.Popen(command(work), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None and len(rows(work)) < target:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = len(rows(work))
        subprocess.run(command(work), cwd=ROOT, check=True, capture_output=True)
        logged = rows(work)
        restart = next(i for i in range(1, len(logged)) if logged[i]["step"] <= logged[i - 1]["step"])
        after = logged[restart:]
        same = all(row["loss"] == expected[row["step"]] for row in after) and after[-1]["step"] == STEPS
        identical += same
        print(f"{trial:>5}{killed_at:>19}{after[0]['step'] - 1:>14}{len(after):>16}{'yes' if same else 'NO':>15}")
    print(f"\n{identical} of {TRIALS} resumed runs logged exactly the uninterrupted losses")
    if identical != TRIALS:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
