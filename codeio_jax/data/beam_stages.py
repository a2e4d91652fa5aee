"""The data stages as Beam transforms: each DoFn wraps the per-record functions
the local driver runs (stages.py, ios.py, predictions.py, dedup.py), and sends
what a stage rejects to the ERRORS output as the error row the local driver writes.

Sandboxes and teachers cannot be pickled, so each DoFn instance builds its own in
`setup()` and closes it in `teardown()`.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from codeio_jax.data import decontaminate, dedup, ios, predictions, stages
from codeio_jax.data.beam_io import read_runs
from codeio_jax.data.determinism import recheck_sandbox
from codeio_jax.data.pipeline import ChatTeacherSpec
from codeio_jax.execution import ProtectionsMissing, Sandbox, SandboxConfig
from codeio_jax.records import MAX_LINE_BYTES, LineError, RecordError, UnifiedRecord, parse_line, unified_or_error

ERRORS = "errors"
SIGNATURES = "signatures"
Key = tuple[int, int]  # (the line's position in the source, prediction row index)
NAMESPACE = "codeio"


class Parse(beam.DoFn):
    """A source line to the first stage's input, or the error row the local
    driver writes for it: a UnifiedRecord for `ios` (ios.IOResult.unreadable's
    row), a row for `transform` and `import` (stages.unreadable's)."""

    def __init__(self, stage: str, max_line_bytes: int = MAX_LINE_BYTES):
        self._stage = stage
        self._max_line_bytes = max_line_bytes
        self._records = Metrics.counter(NAMESPACE, "records")

    def process(self, item: tuple[int, str, int, bytes]) -> Iterator[Any]:
        at, file, offset, raw = item
        self._records.inc()
        try:
            value: Any = parse_line(raw, self._max_line_bytes)
        except RecordError as exc:
            value = LineError(None, str(exc), file=file, offset=offset)
        if self._stage == "ios":
            value = unified_or_error(value, None, file, offset)
        if not isinstance(value, LineError):
            yield at, value
        elif self._stage == "ios":
            yield TaggedOutput(ERRORS, ios.IOResult.unreadable(value).to_dict())
        else:
            yield TaggedOutput(ERRORS, stages.unreadable(self._stage, value))


class SandboxDoFn(beam.DoFn):
    """A DoFn over batches that holds a sandbox of its own between bundles. On a
    worker where the sandbox cannot get the protections the run requires, no
    code runs: every row of every batch becomes an error row saying why."""

    def __init__(self, config: SandboxConfig):
        self._config = config
        self._sandbox: Sandbox | None = None
        self._missing: str | None = None

    def setup(self) -> None:
        try:
            self._sandbox = Sandbox(self._config)
            self.ready()
        except ProtectionsMissing as exc:
            self.teardown()
            self._missing = str(exc)

    def ready(self) -> None:
        """What a subclass builds once its sandbox is up."""

    def teardown(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def process(self, batch: list) -> Iterator[Any]:
        if self._missing is None:
            yield from self.run(batch)
            return
        for key, item in batch:
            yield TaggedOutput(ERRORS, self.unprotected(key, item, self._missing))

    def run(self, batch: list) -> Iterator[Any]:
        raise NotImplementedError

    def unprotected(self, key: Any, item: Any, reason: str) -> dict:
        raise NotImplementedError


class IOs(SandboxDoFn):
    """The ios stage on a batch of records: all submitted at once, so the
    sandbox's slots work in parallel, then judged one by one."""

    def __init__(self, config: SandboxConfig, settings: ios.IOSettings):
        super().__init__(config)
        self._settings = settings
        self._recheck: Sandbox | None = None

    def ready(self) -> None:
        if self._settings.determinism:
            self._recheck = recheck_sandbox(self._config)

    def teardown(self) -> None:
        super().teardown()
        if self._recheck is not None:
            self._recheck.close()
            self._recheck = None

    def unprotected(self, line: int, record: UnifiedRecord, reason: str) -> dict:
        return ios.IOResult(record.id, line, error=reason).to_dict()

    def run(self, batch: list[tuple[int, UnifiedRecord]]) -> Iterator[Any]:
        futures = [ios.submit(record, line, self._sandbox, self._settings, self._recheck) for line, record in batch]
        for (line, record), future in zip(batch, futures):
            found = future.result()
            if found.row is not None:
                yield line, found.row
            else:
                yield TaggedOutput(ERRORS, found.to_dict())


class Decontaminate(beam.DoFn):
    """The decontaminate stage. The index is the launcher's, shipped with the
    DoFn: workers need no copy of the benchmark files."""

    def __init__(self, index: decontaminate.Index):
        self._index = index

    def process(self, item: tuple[int, dict]) -> Iterator[Any]:
        line, row = item
        result = stages.decontaminated(line, row, self._index)
        if result.ok:
            yield line, row
        else:
            yield TaggedOutput(ERRORS, result.rows[0])


class Sign(beam.DoFn):
    """A record's dedup signature to the side as its bucket entries, the record
    on as an entry of its own (both for sorted runs: beam_io.SortedRuns); a
    record that cannot be compared is the local stage's error row."""

    def __init__(self, settings: dedup.Settings, record_shards: int):
        self._settings, self._record_shards = settings, record_shards

    def process(self, item: tuple[int, dict]) -> Iterator[Any]:
        line, row = item
        try:
            sig = dedup.signature(line, row, self._settings)
        except dedup.DedupError as exc:
            failed = stages.deduplicated(line, row, None, {}, self._settings, str(exc))
            yield TaggedOutput(ERRORS, failed.rows[0])
            return
        for key, text in dedup.bucket_entries(sig, self._settings):
            yield TaggedOutput(SIGNATURES, (int(key[:8], 16) % BUCKET_SHARDS, key, text))
        waiting = json.dumps([line, list(sig.key), row], ensure_ascii=False).encode("utf-8", "surrogatepass")
        yield line % self._record_shards, f"{line:020d}", waiting


BUCKET_SHARDS = 16  # sorted runs of bucket entries, each merged by one worker


def bucket_links(item: tuple[int, list[str]], settings: dedup.Settings) -> Iterator[tuple]:
    """The links of every bucket in one shard of bucket runs: one bucket's
    signatures in memory at a time."""
    members: list[dedup.Signature] = []
    current = None
    for key, text in read_runs(item):
        bucket = dedup.bucket_of(key)
        if bucket != current:
            yield from ((link.dropped, link) for link in dedup.links_in(members, settings))
            members, current = [], bucket
        members.append(dedup.signature_from_text(text))
    yield from ((link.dropped, link) for link in dedup.links_in(members, settings))


def waiting_records(item: tuple[int, list[str]]) -> Iterator[tuple[int, dict, tuple]]:
    """The records Sign set aside, read back once the decision is made."""
    for _, text in read_runs(item):
        line, key, row = json.loads(text)
        yield line, row, (key[0], key[1], key[2])


class Dedup(beam.DoFn):
    """Records that copy nothing earlier pass; the others become error rows. The
    links (one per dropped record, not per record) reach every worker whole:
    `kept_id` follows them back to the record kept."""

    def __init__(self, settings: dedup.Settings):
        self._settings = settings

    def process(self, item: tuple[int, dict, tuple], dropped: dict) -> Iterator[Any]:
        line, row, key = item
        result = stages.deduplicated(line, row, key, dropped, self._settings)
        if result.ok:
            yield line, row
        else:
            yield TaggedOutput(ERRORS, result.rows[0])


class Prompts(beam.DoFn):
    """A record with pairs to its prediction rows, keyed (line, index) in the
    order prompt_rows gives them: the order of the local prompts.jsonl."""

    def __init__(self, seed: int, per_task: int):
        self._seed = seed
        self._per_task = per_task

    def process(self, item: tuple[int, dict]) -> Iterator[Any]:
        line, row = item
        try:
            rows = predictions.prompt_rows(row, self._seed, self._per_task)
        except RecordError as exc:
            yield TaggedOutput(ERRORS, stages.error("prompts", line, row, str(exc)).rows[0])
        else:
            yield from (((line, index), prediction) for index, prediction in enumerate(rows))


class Respond(SandboxDoFn):
    """respond at `turn` (stages.respond_file's rules): rows that want the turn
    go to the responder a batch at a time, the others pass through."""

    def __init__(self, config: SandboxConfig, spec: Any, cache_dir: str, turn: int):
        super().__init__(config)
        self._spec = spec
        self._cache_dir = cache_dir
        self._turn = turn
        self._responder: Any = None

    def ready(self) -> None:
        self._responder = self._spec.build(self._sandbox, self._cache_dir)

    def teardown(self) -> None:
        if self._responder is not None:
            self._responder.__exit__(None, None, None)  # its threads, connections
            self._responder = None
        super().teardown()

    def unprotected(self, key: Key, row: dict, reason: str) -> dict:
        return stages.error(f"respond_{self._turn}", key[0], row, reason).rows[0]

    def run(self, batch: list[tuple[Key, dict]]) -> Iterator[Any]:
        asks = [(key, row) for key, row in batch if predictions.wants_turn(row, self._turn)]
        yield from ((key, row) for key, row in batch if not predictions.wants_turn(row, self._turn))
        replies = self._responder.reply([row for _, row in asks]) if asks else []
        stage = f"respond_{self._turn}"
        for (key, row), reply in zip(asks, replies):
            if reply.ok:
                yield key, predictions.with_reply(row, reply, self._responder.name)
            elif self._turn == 1:
                failed = stages.error(stage, key[0], row, f"the teacher failed: {reply.error}", row=row)
                yield TaggedOutput(ERRORS, failed.rows[0])
            else:  # a failed revision keeps the row, noting why
                yield key, {**row, "revision_errors": [*row.get("revision_errors", []),
                                                       {"turn": self._turn, "error": reply.error}]}


class Verify(SandboxDoFn):
    """verify on a batch: its input predictions run side by side on the sandbox."""

    def __init__(self, config: SandboxConfig, reveal_expected: bool, timeout_s: float, turn: int):
        super().__init__(config)
        self._reveal_expected = reveal_expected
        self._timeout_s = timeout_s
        self._turn = turn

    def unprotected(self, key: Key, row: dict, reason: str) -> dict:
        return stages.error(f"verify_{self._turn}", key[0], row, reason).rows[0]

    def run(self, batch: list[tuple[Key, dict]]) -> Iterator[tuple[Key, dict]]:
        verified = predictions.verify_rows([row for _, row in batch], self._sandbox, self._reveal_expected,
                                           self._timeout_s)
        yield from ((key, row) for (key, _), row in zip(batch, verified))


def assemble(item: tuple[Key, dict]) -> dict:
    return predictions.assemble_row(item[1])


class Transform(beam.DoFn):
    """The transform stage on a batch of raw rows: one teacher per DoFn
    instance, its reply cache in the shared `cache_dir`."""

    def __init__(self, spec: ChatTeacherSpec, cache_dir: str):
        self._spec, self._cache_dir = spec, cache_dir
        self._responder: Any = None

    def setup(self) -> None:
        self._responder = self._spec.build(None, self._cache_dir)

    def teardown(self) -> None:
        if self._responder is not None:
            self._responder.__exit__(None, None, None)
            self._responder = None

    def process(self, batch: list[tuple[int, Any]]) -> Iterator[Any]:
        for (at, _), result in zip(batch, stages.transform_batch(batch, self._responder.teacher)):
            if result.ok:
                yield at, result.rows[0]
            else:
                yield TaggedOutput(ERRORS, result.rows[0])


def to_record(item: tuple[int, dict]) -> Iterator[Any]:
    """A transformed row as the ios stage reads it back (records.unified_or_error)."""
    at, row = item
    found = unified_or_error(json.loads(json.dumps(row, ensure_ascii=False)), None, None, None)
    if isinstance(found, LineError):
        yield TaggedOutput(ERRORS, ios.IOResult.unreadable(found).to_dict())
    else:
        yield at, found


def import_row(item: tuple[int, Any]) -> Iterator[Any]:
    result = stages.imported(item[0], item[1])
    yield result.rows[0] if result.ok else TaggedOutput(ERRORS, result.rows[0])
