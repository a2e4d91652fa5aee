"""The `ios` stage: execution-verified input/output pairs for each unified record.

For a record with an `input_generator`: call it up to `max_calls` times and keep
up to `max_pairs` distinct pairs within the paper's size limits, all inside one
sandboxed run, seeded from (seed, record id) so a rerun gives the same bytes.
Inputs go through JSON before `main_solution` sees them, so every kept pair is
reproducible from the stored data alone.

For a record without a generator (the CodeI/O authors' parsed format), replay
its recorded pairs: run `main_solution` on each recorded input and keep the pairs
whose output it reproduces.

With `determinism` on (the default), every record with pairs then runs again
in another world (data/determinism.py) and keeps only the pairs that held there.

A record that yields no pair, raises, times out, or proves non-deterministic
becomes an error record with the reason; no record is dropped silently.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import json
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from codeio_jax.data import determinism
from codeio_jax.data.driver import Result, fingerprint, run_resumable
from codeio_jax.data.ios_harness import IOSettings, generator_check, record_seed, replay_check
from codeio_jax.execution import Limits, Sandbox
from codeio_jax.records import LineError, UnifiedRecord, read_unified_numbered
from codeio_jax.verify.compare import values_match

DEFAULT_CORPUS = Path(__file__).with_name("corpus") / "default.jsonl"
STAGE = "ios"


@dataclasses.dataclass(frozen=True)
class IOResult:
    """One record's outcome: the record with its pairs, or an error."""

    record_id: str | None  # None: a line that holds no record, named by its location
    line: int | None
    row: dict | None = None
    error: str | None = None
    location: dict | None = None  # file and offset of a line that is no record

    def to_dict(self) -> dict:
        if self.row is not None:
            return self.row
        return {"id": self.record_id, "stage": STAGE, "line": self.line, **(self.location or {}),
                "error": self.error}

    @classmethod
    def unreadable(cls, where: LineError) -> "IOResult":
        return cls(where.id, where.line, error=where.reason, location=where.location())


def submit(record: UnifiedRecord, line: int, sandbox: Sandbox, settings: IOSettings,
           recheck: Sandbox | None = None) -> concurrent.futures.Future:
    """The record's IOResult, as a future: its run in `sandbox`, judged, then,
    with settings.determinism, its pairs rechecked in `recheck`, the sandbox of
    the other world (determinism.recheck_sandbox)."""
    if settings.determinism and recheck is None:
        raise ValueError("IOSettings.determinism needs the other world's sandbox: pass "
                         "recheck=determinism.recheck_sandbox(config), or turn determinism off")
    limits = Limits(timeout_s=settings.timeout_s, memory_mb=settings.memory_mb)
    make = generator_check if record.input_generator else replay_check
    result: concurrent.futures.Future = concurrent.futures.Future()

    def settle(compute) -> None:
        try:
            result.set_result(compute())
        except BaseException as exc:  # a broken sandbox: the caller's result() raises it
            result.set_exception(exc)

    def ran(future) -> None:
        try:
            found = judge(record, line, future.result(), settings)
            if found.row is None or not settings.determinism:
                result.set_result(found)
                return
            seed = record_seed(settings.seed, record.id + "\0recheck")
            check = determinism.recheck_check(record.funcname, record.refcode, found.row["ios"], seed, limits)
            recheck.submit(check).add_done_callback(
                lambda done: settle(lambda: confirm(found, done.result(), settings)))
        except BaseException as exc:
            result.set_exception(exc)

    sandbox.submit(make(record, settings, limits)).add_done_callback(ran)
    return result


def confirm(found: IOResult, outcome, settings: IOSettings) -> IOResult:
    """A judged record's pairs after the recheck in the other world: those that held."""
    checked = determinism.judge(found.row["ios"], outcome, settings.deterministic_min_pairs)
    if checked.error is not None:
        return IOResult(found.record_id, found.line, error=checked.error)
    row = {**found.row, "ios": checked.pairs, "ios_stats": {**found.row["ios_stats"], "determinism": checked.stats}}
    return IOResult(found.record_id, found.line, row=row)


def judge(record: UnifiedRecord, line: int, outcome, settings: IOSettings) -> IOResult:
    if not outcome.passed:
        return IOResult(record.id, line, error=_failure_reason(outcome, record))
    value = outcome.value
    expected = dict if record.input_generator else list
    malformed = not isinstance(value, expected) or (
        len(value) != len(record.ios) if expected is list
        else not ({"pairs", "calls", "rejected"} <= value.keys() or "error" in value))
    if malformed:
        # Only a record that redefines the harness's own names gets here.
        return IOResult(record.id, line, error="the record's code interfered with the harness: "
                                                f"it returned {type(value).__name__}")
    if record.input_generator:
        if "error" in value:
            return IOResult(record.id, line, error=value["error"])
        pairs, stats = value["pairs"], {"mode": "generated", "calls": value["calls"],
                                        "rejected": value["rejected"]}
        if not pairs:
            return IOResult(record.id, line, error=_no_pair_reason(value["calls"], value["rejected"]))
    else:
        pairs, mismatched, failed = [], 0, collections.Counter()
        for pair, (ok, result) in zip(record.ios, value):
            if not ok:
                failed[result] += 1
            elif values_match(result, pair.output):
                pairs.append(pair.to_dict())
            else:
                mismatched += 1
        pairs = pairs[:settings.max_pairs]
        stats = {"mode": "replayed", "recorded": len(record.ios), "reproduced": len(pairs),
                 "mismatched": mismatched, "raised": dict(failed)}
        if not pairs:
            return IOResult(record.id, line, error=(
                f"no recorded pair reproduced: {len(record.ios)} recorded, {mismatched} gave another "
                f"output, errors {dict(failed) or 'none'}"))
    row = record.to_dict()
    row["ios"] = pairs
    row["ios_stats"] = stats
    return IOResult(record.id, line, row=row)


def numbered(records: Iterable[UnifiedRecord]) -> Iterator[tuple[int, UnifiedRecord]]:
    """Records held in memory, numbered as the lines of a file would be."""
    return enumerate(records, start=1)


def generate(items: Iterable[tuple[int, UnifiedRecord | LineError]], sandbox: Sandbox,
             settings: IOSettings, in_flight: int | None = None,
             buffered: int = 1000, recheck: Sandbox | None = None) -> Iterator[IOResult]:
    """Results in input order, for (line number, record or LineError) items. At
    most `in_flight` records run at once; finished ones wait (up to `buffered`)
    behind a slow record instead of idling the pool."""
    in_flight = in_flight or 4 * sandbox.workers
    pending: collections.deque = collections.deque()
    for line, item in items:
        if isinstance(item, LineError):
            pending.append((None, item, None))
        else:
            pending.append((item, line, submit(item, line, sandbox, settings, recheck)))
        while True:
            while pending and (pending[0][2] is None or pending[0][2].done()):
                yield _finish(pending.popleft())
            running = [entry[2] for entry in pending if entry[2] is not None and not entry[2].done()]
            if len(running) < in_flight and len(pending) < buffered:
                break
            concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
    while pending:
        yield _finish(pending.popleft())


def _finish(entry) -> IOResult:
    record, where, future = entry
    if record is None:
        return IOResult.unreadable(where)
    return future.result()


@dataclasses.dataclass
class IOSummary:
    records: int = 0
    kept: int = 0
    errors: int = 0
    pairs: int = 0
    error_reasons: dict = dataclasses.field(default_factory=dict)
    resumed_at: int = 0  # records an interrupted run had finished
    already_done: bool = False  # the files were there, from the same input and settings


def run_file(source: str | Path, dest: str | Path, errors_dest: str | Path, sandbox: Sandbox,
             settings: IOSettings, on_record: Callable[[str], None] | None = None,
             recheck: Sandbox | None = None) -> IOSummary:
    """Stream unified records from `source` into `dest` (records with pairs) and
    `errors_dest` (error records), resumable after an interruption (driver.py);
    the summary counts the finished files, whatever run made them. `recheck`:
    the other world's sandbox, which settings.determinism needs."""

    def results_from(skip: int) -> Iterator[Result]:
        items = itertools.islice(read_unified_numbered(source), skip, None)
        for result in generate(items, sandbox, settings, recheck=recheck):
            yield Result.one(result.row is not None, result.to_dict())

    report = (lambda result: on_record("kept" if result.ok else "error")) if on_record else None
    run = run_resumable(dest, errors_dest, fingerprint(source, STAGE, settings), results_from, report)
    summary = IOSummary(resumed_at=run.resumed_at, already_done=run.already_done)
    reasons: collections.Counter = collections.Counter()
    with open(dest, encoding="utf-8") as f:  # a line at a time: the file grows with the corpus
        for line in f:
            summary.kept += 1
            summary.pairs += len(json.loads(line)["ios"])
    with open(errors_dest, encoding="utf-8") as f:
        for line in f:
            summary.errors += 1
            reasons[reason_kind(json.loads(line)["error"])] += 1
    summary.records = summary.kept + summary.errors
    summary.error_reasons = dict(reasons.most_common())
    return summary


def reason_kind(reason: str) -> str:
    """A short class of an error reason, for counts."""
    for kind in ("non-deterministic", "determinism check", "missing module", "timed out", "memory",
                 "does not parse", "no pair",
                 "no recorded pair", "input_generator", "not valid", "is missing", "must be"):
        if kind in reason:
            return kind
    return "other"


def _failure_reason(outcome, record: UnifiedRecord) -> str:
    status, message = outcome.status, outcome.message
    if status == "timeout":
        return f"timed out: {message}"
    if status == "memory":
        return f"exceeded memory: {message}"
    if status == "error:ModuleNotFoundError":
        module = re.search(r"No module named '([^']+)'", message)
        name = module.group(1) if module else message
        return f"missing module {name!r}: the sandbox interpreter does not have it installed"
    if status == "error:SyntaxError":
        return f"the code does not parse: {message}"
    if status.startswith("error:"):
        return f"raised {status[6:]}: {message}"
    return f"{status}: {message}"


def _no_pair_reason(calls: int, rejected: dict) -> str:
    detail = ", ".join(f"{reason} ({count})" for reason, count in
                       sorted(rejected.items(), key=lambda kv: -kv[1])[:5])
    return f"no pair: none of {calls} generated inputs gave a pair within the limits: {detail or 'none'}"
