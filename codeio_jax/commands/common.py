"""What every group of commands shares: the error type, flags, progress, JSON files."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path


class CommandError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def gin_flags(parser: argparse.ArgumentParser, recipes: str) -> None:
    parser.add_argument("--gin_file", action="append", default=[], help=f"a recipe ({recipes}); repeatable")
    parser.add_argument("--gin_search_paths", default="", help="comma-separated folders to find gin files in")
    parser.set_defaults(accepts_gin=True)


def parse_gin_flags(args, extra_bindings=(), register_training: bool = False) -> None:
    """The command's gin files and --gin.NAME=VALUE bindings; a name gin does not know fails here."""
    from codeio_jax.gin_flags import GinFlagError, parse_gin

    if register_training:
        from codeio_jax.training import configurables

        configurables.register_all()
    try:
        parse_gin(args.gin_file, args.gin_search_paths, [*args.gin_bindings, *extra_bindings])
    except GinFlagError as exc:
        raise CommandError(str(exc)) from None


def io_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="inp", required=True, type=Path, help="input rows (JSONL)")
    parser.add_argument("--out", required=True, type=Path, help="output rows (JSONL)")
    parser.add_argument("--errors", type=Path, default=None,
                        help="error rows (JSONL); default: <out stem>.errors.jsonl")


def errors_path(args) -> Path:
    if not args.inp.exists():
        raise CommandError(f"{args.inp} does not exist")
    return args.errors or args.out.with_name(args.out.stem + ".errors.jsonl")


def print_stage(name: str, summary, out: Path, errors: Path) -> None:
    again = " (already done: nothing to do)" if summary.already_done else ""
    resumed = f", resumed after {summary.resumed_at}" if summary.resumed_at else ""
    print(f"{name}: {summary.items} in, {summary.ok} rows out, {summary.errors} errors{resumed}{again}")
    print(f"  wrote {out} and {errors}")


def sandbox_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None, help="parallel checks (default: one per core)")
    parser.add_argument("--python", default=None,
                        help="interpreter that runs the checked programs (default: this one)")


def sandbox_for(args, timeout: float | None = None, recheck: bool = False):
    """The sandbox the flags ask for; with recheck, the other world's
    (data/determinism.py: another hash seed)."""
    from codeio_jax.execution import Limits, Sandbox, SandboxConfig, SandboxError

    fields = {}
    if recheck:
        from codeio_jax.data.determinism import RECHECK_HASH_SEED

        fields["hash_seed"] = RECHECK_HASH_SEED
    if args.python:
        fields["python"] = args.python
    if timeout is not None:
        fields["limits"] = Limits(timeout_s=timeout)
    try:
        return Sandbox(SandboxConfig(workers=args.workers, **fields))
    except (SandboxError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CommandError(f"{path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path} is not valid JSON: {exc}") from None


def write_json(path: Path, obj) -> None:
    from codeio_jax.records import open_atomic

    with open_atomic(path) as f:
        json.dump(obj, f)


def count(items) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def rows_in(path) -> int | None:
    """The rows a stage will report for its input (records.count_rows), None when unreadable."""
    from codeio_jax.records import count_rows

    try:
        return count_rows(path)
    except OSError:
        return None


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


class Progress:
    """Progress on stderr with counts by status: a bar on a terminal (tqdm,
    imported only once work has started, so it never delays the first check);
    elsewhere (a TPU VM under nohup, a CI log) a log line every `interval_s`
    seconds, CODEIO_JAX_PROGRESS_S or 30 by default, with rows done, rows per
    second, counts by status and, when the total is known, the time left.
    final_line: also print a last line when closed (a stage of a longer run)."""

    def __init__(self, total, unit, desc=None, final_line: bool = False, interval_s: float | None = None,
                 stream=None):
        self.stream = stream or sys.stderr
        self.total, self.unit, self.desc, self.final_line = total, unit, desc or unit, final_line
        self.counts: dict[str, int] = {}
        self.done = 0
        self.started = time.monotonic()
        self.bar = None
        self._stop = threading.Event()
        self._closed = False
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=desc, file=self.stream, leave=False)
        else:
            interval = interval_s if interval_s is not None else float(os.environ.get("CODEIO_JAX_PROGRESS_S", 30))
            threading.Thread(target=self._log_every, args=(interval,), daemon=True,
                             name=f"progress-{self.desc}").start()

    def result(self, result) -> None:
        """Counts a driver Result (one input item)."""
        self.count("ok" if result.ok else "error", 1)

    def count(self, status: str, n: int) -> None:
        self.counts[status] = self.counts.get(status, 0) + n
        self.done += n
        if self.bar is not None:
            self.bar.set_postfix_str(format_counts(self.counts), refresh=False)
            self.bar.update(n)

    def line(self, finished: bool = False) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done, rate = self.done, self.done / elapsed
        parts = [f"{self.desc}: {done:,}" + (f" of {self.total:,}" if self.total else "") + f" {self.unit}",
                 f"{rate:,.1f}/s"]
        if self.counts:
            parts.append(format_counts(dict(self.counts)))
        if finished:
            parts.append(f"done in {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"about {_duration(max(self.total - done, 0) / rate)} left")
        else:
            parts.append(f"{_duration(elapsed)} so far")
        return ", ".join(parts)

    def _log_every(self, interval: float) -> None:
        while not self._stop.wait(interval):
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self.bar is not None:
            self.bar.close()
        if self.final_line:
            print(self.line(finished=True), file=self.stream, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
