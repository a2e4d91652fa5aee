"""The data pipeline end to end on the embedded corpus, offline (trace teacher).

gin/data/codeio_pp.gin as `make demo` runs it: ios, prompts, two turns of
respond and verify, assemble, write. Reported: records and examples per second
of the whole command, and each stage's share of the time. Baseline, in the same
run: the same pipeline with a one-slot sandbox (one check at a time); and the
same stages on Apache Beam's DirectRunner.

Run: .venv/bin/python benchmarks/pipeline_e2e.py
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(work, *extra):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "codeio_jax.cli", "pipeline", "--gin_file", "data/codeio_pp.gin",
                           "--work_dir", str(work), *extra], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return elapsed, done.stdout


def shard_bytes(work):
    return {path.name: path.read_bytes() for path in sorted((work / "tfrecords").glob("codeio_*"))}


def stage_shares(stdout):
    rows = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 9 and parts[2] == "in" and parts[-1].endswith("%"):
            rows.append((parts[0], float(parts[-3]), parts[-1]))
    return rows


def main():
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    cores = len(os.sched_getaffinity(0))
    records = sum(1 for _ in open(ROOT / "codeio_jax" / "data" / "corpus" / "default.jsonl"))
    ours, out = run(tmp / "ours")
    examples = sum(1 for _ in open(tmp / "ours" / "examples.jsonl"))
    one_slot, _ = run(tmp / "one_slot", "--gin.run_pipeline.workers=1")
    beam, _ = run(tmp / "beam", "--engine", "beam", "--", f"--direct_num_workers={cores}",
                  "--direct_running_mode=multi_threading")
    same = all(shard_bytes(tmp / name) == shard_bytes(tmp / "ours") for name in ("one_slot", "beam"))
    print(f"pipeline, gin/data/codeio_pp.gin, embedded corpus: {records} records -> {examples} examples, "
          f"{cores} cores\n")
    print(f"{'run':<34}{'seconds':>9}{'records/s':>11}{'examples/s':>12}{'vs one slot':>13}")
    for name, seconds in ((f"local driver, {cores} slots", ours), ("local driver, 1 slot (baseline)", one_slot),
                          (f"Beam DirectRunner, {cores} workers", beam)):
        print(f"{name:<34}{seconds:>9.2f}{records / seconds:>11.1f}{examples / seconds:>12.1f}"
              f"{one_slot / seconds:>12.2f}x")
    print(f"\nshards (examples, errors, counts) identical across the three runs: {same}")
    print("\nshare of the stages' time (local driver; the rest of the command is start-up):")
    total = sum(seconds for _, seconds, _ in stage_shares(out))
    for name, seconds, share in stage_shares(out):
        print(f"  {name:<10}{seconds:>7.2f} s {share:>7}")
    print(f"  {'stages':<10}{total:>7.2f} s of {ours:.2f} s")
    if not same:
        raise SystemExit("the runs disagree")


if __name__ == "__main__":
    main()
