"""The CodeI/O authors' 464 parsed records end to end, offline (trace teacher).

gin/data/codeio_pp.gin (determinism, decontamination and deduplication on) over
`../shared/data/codeio/rawcode_1k_parsed.jsonl`, as a user runs it: the whole
command's wall time, the teacher's failures among the prompts, the examples
out, and whether every first-turn trace answer verified right (report.json).

Beside it, measured in the same run, the floor: the authors' code itself, every
recorded input run once, untraced, on the same sandbox (the replay harness of
the ios stage). The pipeline runs each pair about five times (replay, the
determinism check's two calls, the trace, the verification of an input
prediction), so it cannot be faster than a few of these passes.

Then the trace teacher alone on the first PROMPTS prompts of that run, against
a baseline measured here on the same prompts and the same sandbox: the teacher
with its event budgets off (every event recorded in detail until the code
ends, as before the budgets), which is what made 56 of 2,594 prompts wait out
the 20 s limit.

Run: .venv/bin/python benchmarks/authors_pipeline.py [--prompts 600]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
AUTHORS = ROOT.parent / "shared" / "data" / "codeio" / "rawcode_1k_parsed.jsonl"


def pipeline(work: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "codeio_jax.cli", "pipeline", "--gin_file", "data/codeio_pp.gin",
                           "--work_dir", str(work), f"--gin.run_pipeline.source='{AUTHORS}'"],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - started


def one_pass() -> float:
    """Every recorded input of every record run once, untraced: the code's own cost."""
    from codeio_jax.data.ios_harness import IOSettings, replay_check
    from codeio_jax.execution import Limits, Sandbox, SandboxConfig
    from codeio_jax.records import read_unified

    records = list(read_unified(AUTHORS))
    settings = IOSettings()
    with Sandbox(SandboxConfig()) as sandbox:
        started = time.perf_counter()
        futures = [sandbox.submit(replay_check(record, settings, Limits(timeout_s=20.0))) for record in records]
        for future in futures:
            future.result()
        return time.perf_counter() - started


def teacher_alone(rows: list[dict], unbounded: bool) -> tuple[float, int]:
    from codeio_jax.data.respond import TraceResponder
    from codeio_jax.execution import Limits, Sandbox, SandboxConfig
    from codeio_jax.teachers.trace import TraceTeacher

    budgets = dict(detail_events=10 ** 12, counted_events=10 ** 12) if unbounded else {}
    with Sandbox(SandboxConfig()) as sandbox:
        responder = TraceResponder(TraceTeacher(sandbox, Limits(timeout_s=20.0), **budgets))
        started = time.perf_counter()
        failed = 0
        for start in range(0, len(rows), responder.batch_size):
            failed += sum(not reply.ok for reply in responder.reply(rows[start:start + responder.batch_size]))
        return time.perf_counter() - started, failed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=600)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-authors-"))
    cores = len(os.sched_getaffinity(0))
    wall = pipeline(work / "run")
    report = json.loads((work / "run" / "report.json").read_text())
    stages = {row["stage"]: row for row in report["stages"]}
    prompts = stages["prompts"]["rows_out"]
    failures = stages["respond_1"]["error_rows"]
    print(f"the authors' records, gin/data/codeio_pp.gin, {cores} cores, trace teacher on both turns\n")
    print(f"{'stage':<14}{'in':>7}{'out':>7}{'errors':>8}{'seconds':>9}  reasons")
    for row in report["stages"]:
        reasons = "; ".join(f"{k}: {v}" for k, v in row["reasons"].items())
        print(f"{row['stage']:<14}{row['rows_in']:>7}{row['rows_out']:>7}{row['error_rows']:>8}"
              f"{row['seconds']:>9.2f}  {reasons}")
    tasks = report["tasks"]
    first_right = sum(t["first_correct"] for t in tasks.values())
    answered = sum(t["first_correct"] + t["first_wrong"] for t in tasks.values())
    floor = one_pass()
    print(f"\nwhole command: {wall:.1f} s (goal: under 60 s; before this work: 864 s)")
    print(f"one untraced pass of every recorded input (the floor, same sandbox): {floor:.1f} s; "
          f"the command takes {wall / floor:.1f} passes")
    print(f"teacher failures: {failures} of {prompts} prompts ({failures / max(prompts, 1):.2%}; goal under 0.5%, "
          f"before: 2.2%)")
    print(f"examples out: {sum(1 for _ in open(work / 'run' / 'examples.jsonl'))}")
    print(f"first-turn trace answers verified right: {first_right} of {answered}")

    rows = [json.loads(line) for line in open(work / "run" / "prompts.jsonl")][:args.prompts]
    ours, ours_failed = teacher_alone(rows, unbounded=False)
    base, base_failed = teacher_alone(rows, unbounded=True)
    print(f"\ntrace teacher alone, first {len(rows)} prompts of the run, {cores}-slot sandbox:")
    print(f"{'teacher':<40}{'seconds':>9}{'ms/prompt':>11}{'failed':>8}")
    print(f"{'event budgets (ours)':<40}{ours:>9.1f}{1000 * ours / len(rows):>11.1f}{ours_failed:>8}")
    print(f"{'budgets off (every event, baseline)':<40}{base:>9.1f}{1000 * base / len(rows):>11.1f}{base_failed:>8}")
    print(f"speed-up: {base / ours:.1f}x")


if __name__ == "__main__":
    main()
