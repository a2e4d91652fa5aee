"""Kill -9 at 10 random moments of a pipeline run; the final TFRecords must be
byte-identical to an uninterrupted run's, every time.

The baseline is an uninterrupted run of gin/data/codeio_pp.gin on the embedded
corpus. Then ten runs, each into its own folder: start, SIGKILL at a moment
drawn uniformly over the uninterrupted run's duration, start again and let it
finish. Reported: where each kill landed (the stages finished by then), whether
the final shards and every stage file equal the baseline's byte for byte, and
the time of the resumed run against a full one.

Run: .venv/bin/python benchmarks/pipeline_resume.py
"""

import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLS = 10


def command(work):
    return [sys.executable, "-m", "codeio_jax.cli", "pipeline", "--gin_file", "data/codeio_pp.gin",
            "--work_dir", str(work)]


def files(work):
    found = {p.relative_to(work).as_posix(): p.read_bytes() for p in sorted(work.rglob("*"))
             if p.is_file() and "teacher_cache" not in p.parts}
    return found


def main():
    tmp = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    reference = tmp / "reference"
    started = time.perf_counter()
    subprocess.run(command(reference), check=True, capture_output=True, cwd=ROOT)
    full = time.perf_counter() - started
    expected = files(reference)
    shards = sorted(name for name in expected if ".tfrecord-" in name)
    print(f"uninterrupted run: {full:.2f} s, {len(shards)} TFRecord shards, {len(expected)} files\n")
    print(f"{'kill':>4}{'at s':>7}  {'finished stages when killed':<44}{'resume s':>9}{'shards':>8}{'all files':>10}")
    rng = random.Random(2026)
    identical = 0
    for attempt in range(1, KILLS + 1):
        work = tmp / f"killed{attempt}"
        process = subprocess.Popen(command(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        moment = rng.uniform(0.05, full)
        time.sleep(moment)
        process.send_signal(signal.SIGKILL)
        process.wait()
        done = [p.name[:-len(".jsonl.done")]
                for p in sorted(work.glob("*.jsonl.done"), key=lambda p: p.stat().st_mtime_ns)]
        started = time.perf_counter()
        subprocess.run(command(work), check=True, capture_output=True, cwd=ROOT)
        resumed = time.perf_counter() - started
        found = files(work)
        same_shards = all(found.get(name) == expected[name] for name in shards)
        same_all = found == expected
        identical += same_shards and same_all
        print(f"{attempt:>4}{moment:>7.2f}  {', '.join(done) or '(none)':<44}{resumed:>9.2f}"
              f"{'same' if same_shards else 'DIFFER':>8}{'same' if same_all else 'DIFFER':>10}")
    print(f"\n{identical} of {KILLS} interrupted runs ended byte-identical to the uninterrupted one")
    if identical != KILLS:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
