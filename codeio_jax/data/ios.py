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
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from codeio_jax.data import determinism
from codeio_jax.execution import Check, Limits, Sandbox
from codeio_jax.data.driver import Result, fingerprint, run_resumable
from codeio_jax.records import LineError, UnifiedRecord, read_unified_numbered
from codeio_jax.verify.compare import values_match

DEFAULT_CORPUS = Path(__file__).with_name("corpus") / "default.jsonl"
STAGE = "ios"


@dataclasses.dataclass(frozen=True)
class SizeLimits:
    """The paper's limits on a kept pair (all strict upper bounds)."""

    pair_bytes: int = 1024
    container_items: int = 20
    string_chars: int = 100
    scalar_bytes: int = 128


@dataclasses.dataclass(frozen=True)
class IOSettings:
    seed: int = 0
    max_calls: int = 1000
    max_pairs: int = 10
    timeout_s: float = 20.0
    memory_mb: int = 2048
    sizes: SizeLimits = SizeLimits()
    determinism: bool = True  # recheck every pair in another world (data/determinism.py)
    deterministic_min_pairs: int = 2  # a record with a pair that changed needs this many that held

    def __post_init__(self):
        if self.max_calls < 1 or self.max_pairs < 1 or self.deterministic_min_pairs < 1:
            raise ValueError("max_calls, max_pairs and deterministic_min_pairs must be at least 1")


def record_seed(seed: int, record_id: str) -> int:
    """The seed of one record's generator: stable across runs, machines and order."""
    digest = hashlib.sha256(f"{seed}\0{record_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def generator_check(record: UnifiedRecord, settings: IOSettings, limits: Limits | None = None) -> Check:
    """The record's code and generator, run by the fixed harness `_GENERATE`
    (a prelude: compiled once per sandbox slot) with this record's parameters."""
    params = {"seed": record_seed(settings.seed, record.id), "max_calls": settings.max_calls,
              "max_pairs": settings.max_pairs, "budget_s": 0.8 * settings.timeout_s,
              "funcname": record.funcname, "sizes": dataclasses.asdict(settings.sizes)}
    return Check(_with_params(record.refcode, record.input_generator or "", params),
                 entry="__codeio_ios__", limits=limits, prelude=_GENERATE)


def replay_check(record: UnifiedRecord, settings: IOSettings, limits: Limits | None = None) -> Check:
    """The record's code, run by the fixed harness `_REPLAY` on its recorded inputs."""
    params = {"seed": record_seed(settings.seed, record.id), "funcname": record.funcname,
              "inputs": [pair.input for pair in record.ios]}
    return Check(_with_params(record.refcode, params), entry="__codeio_replay__", limits=limits,
                 prelude=_REPLAY)


def _with_params(*parts) -> str:
    *code, params = parts
    text = json.dumps(params, ensure_ascii=False)
    return "\n\n".join([*code, f"__codeio_params__ = {text!r}\n"])


@dataclasses.dataclass(frozen=True)
class IOResult:
    """One record's outcome: the record with its pairs, or an error."""

    record_id: str
    line: int
    row: dict | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        if self.row is not None:
            return self.row
        return {"id": self.record_id, "stage": STAGE, "line": self.line, "error": self.error}


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
        return IOResult(where.id or f"line-{where.line}", where.line, error=where.reason)
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
    for line in Path(dest).read_text(encoding="utf-8").splitlines():
        summary.kept += 1
        summary.pairs += len(json.loads(line)["ios"])
    for line in Path(errors_dest).read_text(encoding="utf-8").splitlines():
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


# The harnesses below run inside the sandbox as preludes: the record's code then
# defines its functions and `__codeio_params__` (JSON text) in the same namespace.

_GENERATE = '''
def __codeio_too_big__(value, sizes):
    """Why `value` breaks the size limits, or None."""
    kind = type(value)
    if kind is str:
        if len(value) >= sizes["string_chars"]:
            return "string of %d+ characters" % sizes["string_chars"]
        return None
    if kind in (list, tuple, set, dict):
        if len(value) >= sizes["container_items"]:
            return "container of %d+ items" % sizes["container_items"]
        for item in (value.items() if kind is dict else value):
            found = __codeio_too_big__(item, sizes)
            if found:
                return found
        return None
    if kind is bool or value is None:
        return None
    import json
    if len(json.dumps(value)) >= sizes["scalar_bytes"]:
        return "scalar of %d+ bytes" % sizes["scalar_bytes"]
    return None


def __codeio_ios__():
    import json, random, time
    params = json.loads(__codeio_params__)
    sizes, funcname = params["sizes"], params["funcname"]
    solve, generate = globals().get(funcname), globals().get("input_generator")
    for name, found in ((funcname, solve), ("input_generator", generate)):
        if not callable(found):
            return {"error": "the record's code does not define a function `%s`" % name}
    random.seed(params["seed"])
    deadline = time.monotonic() + params["budget_s"]
    pairs, seen, rejected, calls = [], set(), {}, 0

    def reject(reason):
        rejected[reason] = rejected.get(reason, 0) + 1

    while calls < params["max_calls"] and len(pairs) < params["max_pairs"] and time.monotonic() < deadline:
        calls += 1
        try:
            kwargs = generate()
        except Exception as exc:
            return {"error": "input_generator raised %s: %s" % (type(exc).__name__, str(exc)[:300])}
        if not isinstance(kwargs, dict):
            return {"error": "input_generator must return a dict of keyword arguments, got %s"
                             % type(kwargs).__name__}
        try:
            input_text = json.dumps(kwargs, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            reject("input not JSON-serializable")
            continue
        if input_text in seen:
            reject("duplicate input")
            continue
        seen.add(input_text)
        kwargs = json.loads(input_text)
        too_big = __codeio_too_big__(kwargs, sizes)
        if too_big:
            reject("input has a " + too_big)
            continue
        try:
            output = solve(**json.loads(input_text))
        except Exception as exc:
            reject(funcname + " raised " + type(exc).__name__)
            continue
        if output is None:
            reject("output is None")
            continue
        try:
            output_text = json.dumps(output, allow_nan=False)
        except (TypeError, ValueError):
            reject("output not JSON-serializable")
            continue
        output = json.loads(output_text)
        too_big = __codeio_too_big__(output, sizes)
        if too_big:
            reject("output has a " + too_big)
            continue
        # The size of json.dumps({"input": ..., "output": ...}), ASCII-escaped
        # so characters are bytes: the two texts and 23 characters around them.
        if len(input_text) + len(output_text) + 23 >= sizes["pair_bytes"]:
            reject("pair of %d bytes or more" % sizes["pair_bytes"])
            continue
        pairs.append({"input": kwargs, "output": output})
    return {"pairs": pairs, "calls": calls, "rejected": rejected}
'''

_REPLAY = '''
def __codeio_replay__():
    import json, random
    params = json.loads(__codeio_params__)
    solve = globals().get(params["funcname"])
    if not callable(solve):
        raise NameError("the record's code does not define a function `%s`" % params["funcname"])
    random.seed(params["seed"])  # code that draws random numbers replays the same way every time
    results = []
    for kwargs in params["inputs"]:
        try:
            output = json.loads(json.dumps(solve(**kwargs), allow_nan=False))
            results.append([True, output])
        except Exception as exc:
            results.append([False, type(exc).__name__])
    return results
'''
