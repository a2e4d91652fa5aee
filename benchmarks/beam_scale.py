"""The data pipeline at corpus scale: Beam against the local driver.

Three measurements, each a ratio against a baseline in the same run:

  throughput  the full pipeline (gin/data/codeio_pp.gin: trace teacher, one
              revision round) over one synthetic corpus on the local driver
              (the baseline) and on Beam's DirectRunner with 1 and 2 worker
              processes: records/s, and whether the shards are the same bytes.
  memory      peak resident memory of the launcher and of each Beam worker
              process (the sandbox's slots are counted apart) for the same
              pipeline, and for `import`, at two corpus sizes: the ratio large
              over small is what "flat in the corpus size" means.
  import      released-format rows through the `import` start on each engine:
              rows/s and peak memory.

Synthetic corpora: the embedded corpus's records, each copy with an id of its
own and a helper function of fresh names and literals appended to its code,
long enough that no copy is a near duplicate of another (dedup keeps them all);
released rows with the released field names and text that differs per row.

Run: .venv/bin/python benchmarks/beam_scale.py --records 2000,20000 --released 1000000
     (--parts throughput,memory,import picks some; --workdir keeps the files)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "codeio_jax" / "data" / "corpus" / "default.jsonl"
TWO = ["--direct_running_mode=multi_processing"]


def padding(variant: int, lines: int = 40) -> str:
    """A helper no other copy has: names and literals of this variant only."""
    body = "\n".join(f"    v{variant}_{i} = {variant * 7919 + i} * x + {i}" for i in range(lines))
    return f"\n\ndef _variant_{variant}_helper(x):\n{body}\n    return v{variant}_0\n"


def synthetic_records(n: int, path: Path) -> None:
    base = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    with open(path, "w", encoding="utf-8") as f:
        for variant in range(n):
            row = dict(base[variant % len(base)])
            row["id"] = f"{row['id']}~{variant}"
            row["refcode"] = row["refcode"] + padding(variant)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def synthetic_released(n: int, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            task = "output" if i % 2 else "input"
            row = {"prompt": f"You are given a function (#{i}) ... " + "context " * 60
                   + f'Answer as {{"{task}": <your {task}>}}.',
                   "turn_1": f"Let me trace it, step {i}. " + "reasoning " * 80 + f'{{"{task}": {i}}}',
                   "feedback_1": "" if i % 3 else f"Wrong: the {task} is {i + 1}.",
                   "turn_2": "" if i % 3 else f'Again: {{"{task}": {i + 1}}}', "feedback_2": ""}
            f.write(json.dumps(row) + "\n")


class PeakMemory:
    """Polls /proc for a process and its descendants: the peak RSS (VmHWM) of
    the launcher, of each Beam worker and of the sandbox's slots."""

    def __init__(self, pid: int):
        self._root = pid
        self.peaks: dict[int, tuple[str, int]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            for pid in self._tree():
                kind, peak = self._read(pid)
                if peak:
                    self.peaks[pid] = (kind, max(peak, self.peaks.get(pid, (kind, 0))[1]))
            time.sleep(0.1)

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self._root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def _read(self, pid: int) -> tuple[str, int]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return "", 0
        peak = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0)
        if pid == self._root:
            kind = "launcher"
        elif "sdk_worker_main" in cmdline or "worker_pool_main" in cmdline:
            kind = "worker"
        elif "execution/worker.py" in cmdline:
            kind = "sandbox slot"
        else:
            kind = "other"
        return kind, peak

    def stop(self) -> dict[str, int]:
        """The largest peak of each kind of process (bytes)."""
        self._done.set()
        self._thread.join()
        by_kind: dict[str, int] = {}
        for kind, peak in self.peaks.values():
            by_kind[kind] = max(by_kind.get(kind, 0), peak)
        return by_kind


def run(work: Path, source: Path, gin_file: str, beam: list[str] | None, extra: tuple[str, ...] = ()):
    """One pipeline command; its wall time and peak memory by kind of process."""
    command = [sys.executable, "-m", "codeio_jax.cli", "pipeline", "--gin_file", gin_file, "--work_dir", str(work),
               f"--gin.run_pipeline.source='{source}'", *extra]
    if beam is not None:
        command += ["--engine", "beam", "--", *beam]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid)
    out, err = process.communicate()
    peaks = memory.stop()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-3000:]}")
    return seconds, peaks


def shard_bytes(work: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((work / "tfrecords").glob("codeio_*"))}


def mib(value: int) -> str:
    return f"{value / 2**20:,.0f}"


ENGINES = (("local driver (baseline)", None), ("Beam DirectRunner, 1 worker", TWO + ["--direct_num_workers=1"]),
           ("Beam DirectRunner, 2 workers", TWO + ["--direct_num_workers=2"]))


def throughput(tmp: Path, records: int) -> None:
    source = tmp / f"records-{records}.jsonl"
    synthetic_records(records, source)
    print(f"\n## throughput: gin/data/codeio_pp.gin over {records:,} synthetic records\n")
    print("| engine | seconds | records/s | vs local | shards = local's |\n|---|---:|---:|---:|---|")
    first = None
    for index, (name, beam) in enumerate(ENGINES):
        work = tmp / f"throughput-{index}"
        seconds, _ = run(work, source, "data/codeio_pp.gin", beam)
        same = "(itself)" if first is None else str(shard_bytes(work) == shard_bytes(first[0]))
        first = first or (work, seconds)
        print(f"| {name} | {seconds:.1f} | {records / seconds:.2f} | {first[1] / seconds:.2f}x | {same} |",
              flush=True)


def memory(tmp: Path, sizes: list[int]) -> None:
    print(f"\n## peak resident memory (MiB) by corpus size; ratio = {sizes[-1]:,} over {sizes[0]:,}\n")
    print("| run | process | " + " | ".join(f"{n:,}" for n in sizes) + " | ratio |")
    print("|---|---|" + "---:|" * (len(sizes) + 1))
    for what in ("pipeline", "import"):
        for name, beam in ENGINES[0], ENGINES[2]:
            peaks = []
            for n in sizes:
                source = tmp / f"{what}-{n}.jsonl"
                if not source.exists():
                    (synthetic_records if what == "pipeline" else synthetic_released)(n, source)
                work = tmp / f"memory-{what}-{n}-{beam is not None}"
                gin_file = "data/codeio_pp.gin"
                peaks.append(run(work, source, gin_file, beam)[1])
            for kind in ("launcher", "worker"):
                if kind not in peaks[0]:
                    continue
                values = [p.get(kind, 0) for p in peaks]
                print(f"| {what}, {name} | {kind} | " + " | ".join(mib(v) for v in values)
                      + f" | {values[-1] / values[0]:.2f}x |", flush=True)


def released_import(tmp: Path, rows: int) -> None:
    source = tmp / f"released-{rows}.jsonl"
    synthetic_released(rows, source)
    size = source.stat().st_size
    print(f"\n## import: {rows:,} released-format rows ({size / 2**30:.2f} GiB)\n")
    print("| engine | seconds | rows/s | vs local | peak launcher MiB | peak worker MiB | shards = local's |")
    print("|---|---:|---:|---:|---:|---:|---|")
    first = None
    for index, (name, beam) in enumerate((ENGINES[0], ENGINES[2])):
        work = tmp / f"import-{index}"
        seconds, peaks = run(work, source, "data/codeio.gin", beam)
        same = "(itself)" if first is None else str(shard_bytes(work) == shard_bytes(first[0]))
        first = first or (work, seconds)
        print(f"| {name} | {seconds:.1f} | {rows / seconds:,.0f} | {first[1] / seconds:.2f}x | "
              f"{mib(peaks.get('launcher', 0))} | {mib(peaks.get('worker', 0)) if beam else '-'} | {same} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default="2000,20000", help="corpus sizes for memory; the first for throughput")
    parser.add_argument("--released", type=int, default=1_000_000, help="released rows to import")
    parser.add_argument("--parts", default="throughput,memory,import")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="bench-beam-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    sizes = [int(n) for n in args.records.split(",")]
    parts = args.parts.split(",")
    print(f"# Beam at corpus scale ({len(os.sched_getaffinity(0))} cores, files in {tmp})")
    if "throughput" in parts:
        throughput(tmp, sizes[0])
    if "memory" in parts:
        memory(tmp, sizes)
    if "import" in parts:
        released_import(tmp, args.released)


if __name__ == "__main__":
    main()
