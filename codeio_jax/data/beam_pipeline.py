"""The data pipeline as an Apache Beam pipeline, for corpora that outgrow one machine.

The same per-record functions as the local driver (pipeline.py), as transforms:

    Read (line number, bytes) --Reshuffle--> Parse --ios--> Decontaminate
      --Sign--> Dedup (beside it: signatures --GroupByKey bucket--> the earliest
      copy of each record, a side input) --> Prompts (fan-out)
      --Respond_1--> Verify_1 [--Respond_k--> Verify_k per round] --Assemble
      --> ToList --> examples.jsonl, sorted
    every stage's error rows --Flatten--> ToList --> errors.jsonl, sorted

The runner is whatever `beam_args` name (`--runner=DataflowRunner --project=...`,
`--runner=FlinkRunner --flink_master=...`, `--runner=SparkRunner ...`); without
one, Beam's default, the DirectRunner. Workers need this package installed
(`--setup_file`), and a chat teacher's cache folder only helps where workers share it.

Determinism: Beam keeps no order, so each element carries its key (input line,
index among the record's prediction rows) and the final step sorts by it, which
gives the local driver's order: `run_pipeline` writes byte for byte the same
examples. That step gathers everything in one worker (`ToList`), fine for a
corpus of modest size; for a huge one, write sharded output instead and sort
where it is read. Every stage's output depends only on its element, never on
batching or on which worker ran it.

Sandboxes and teachers cannot be pickled, so each DoFn instance builds its own in
`setup()` and closes it in `teardown()`: keep `sandbox_workers` small and let the
runner's parallelism (e.g. `--direct_num_workers`) multiply them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam
import gin
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import TaggedOutput
from apache_beam.runners.runner import PipelineResult, PipelineState

from codeio_jax.data import decontaminate, dedup, ios, predictions, stages
from codeio_jax.data.determinism import recheck_sandbox
from codeio_jax.data.pipeline import PipelineError, TraceTeacherSpec, benchmarks_of, dedup_settings_of
from codeio_jax.execution import Sandbox, SandboxConfig
from codeio_jax.records import LineError, RecordError, UnifiedRecord

ERRORS = "errors"
SIGNATURES = "signatures"
Key = tuple[int, int]  # (input line, prediction row index); -1 for a record-level row
RECORD = -1
NAMESPACE = "codeio"


def _read_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every line but blank ones, numbered and skipped
    as read_jsonl does. One worker reads (line numbers need the whole file in
    order); the Reshuffle after it spreads the work."""
    with FileSystems.open(path) as f:
        yield from ((number, raw) for number, raw in enumerate(iter(f.readline, b""), start=1)
                    if raw.strip())


class _Parse(beam.DoFn):
    """A line to a UnifiedRecord, or the error row the local ios stage writes for it
    (read_jsonl and read_unified_numbered, per line: stage `ios`, id `line-N`)."""

    def __init__(self, max_line_bytes: int = 4 << 20):  # read_jsonl's limit
        self._max_line_bytes = max_line_bytes
        self._records = Metrics.counter(NAMESPACE, "records")

    def process(self, item: tuple[int, bytes]) -> Iterator[Any]:
        number, raw = item
        self._records.inc()
        found = self._parse(number, raw)
        if isinstance(found, UnifiedRecord):
            yield number, found
        else:  # what ios.generate makes of a LineError
            failed = ios.IOResult(found.id or f"line-{number}", number, error=found.reason)
            yield TaggedOutput(ERRORS, ((number, RECORD), failed.to_dict()))

    def _parse(self, number: int, raw: bytes) -> UnifiedRecord | LineError:
        if len(raw) > self._max_line_bytes:
            return LineError(number, f"line {number}: {len(raw)} bytes, over the "
                                     f"{self._max_line_bytes}-byte limit for one record")
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return LineError(number, f"line {number}: not valid UTF-8 ({exc.reason} at byte {exc.start})")
        except ValueError as exc:
            return LineError(number, f"line {number}: not valid JSON ({exc})")
        try:
            return UnifiedRecord.from_dict(row, where=f"line {number}")
        except RecordError as exc:
            return LineError(number, str(exc), row.get("id") if isinstance(row, dict) else None)


class _SandboxDoFn(beam.DoFn):
    """A DoFn over batches that holds a sandbox of its own between bundles."""

    def __init__(self, config: SandboxConfig):
        self._config = config
        self._sandbox: Sandbox | None = None

    def setup(self) -> None:
        self._sandbox = Sandbox(self._config)

    def teardown(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None


class _IOs(_SandboxDoFn):
    """The ios stage on a batch of records: all submitted at once, so the
    sandbox's slots work in parallel, then judged one by one."""

    def __init__(self, config: SandboxConfig, settings: ios.IOSettings):
        super().__init__(config)
        self._settings = settings
        self._recheck: Sandbox | None = None

    def setup(self) -> None:
        super().setup()
        if self._settings.determinism:
            self._recheck = recheck_sandbox(self._config)

    def teardown(self) -> None:
        super().teardown()
        if self._recheck is not None:
            self._recheck.close()
            self._recheck = None

    def process(self, batch: list[tuple[int, UnifiedRecord]]) -> Iterator[Any]:
        futures = [ios.submit(record, line, self._sandbox, self._settings, self._recheck) for line, record in batch]
        for (line, record), future in zip(batch, futures):
            found = future.result()
            if found.row is not None:
                yield line, found.row
            else:
                yield TaggedOutput(ERRORS, ((line, RECORD), found.to_dict()))


class _Decontaminate(beam.DoFn):
    """The decontaminate stage; each worker builds the benchmark index once."""

    def __init__(self, benchmarks: tuple, n: int):
        self._benchmarks, self._n = benchmarks, n
        self._index = None

    def setup(self) -> None:
        self._index = decontaminate.build_index(self._benchmarks, self._n)

    def process(self, item: tuple[int, dict]) -> Iterator[Any]:
        line, row = item
        result = stages.decontaminated(line, row, self._index)
        if result.ok:
            yield line, row
        else:
            yield TaggedOutput(ERRORS, ((line, RECORD), result.rows[0]))


class _Sign(beam.DoFn):
    """A record's dedup signature to the side, the record on, keyed by it; a
    record that cannot be compared is the local stage's error row."""

    def __init__(self, settings: dedup.Settings):
        self._settings = settings

    def process(self, item: tuple[int, dict]) -> Iterator[Any]:
        line, row = item
        try:
            sig = dedup.signature(line, row, self._settings)
        except dedup.DedupError as exc:
            failed = stages.deduplicated(line, row, None, {}, self._settings, str(exc))
            yield TaggedOutput(ERRORS, ((line, RECORD), failed.rows[0]))
            return
        yield TaggedOutput(SIGNATURES, sig)
        yield line, (row, sig)


def _bucketed(sig: dedup.Signature, settings: dedup.Settings) -> Iterator[tuple[bytes, dedup.Signature]]:
    return ((bucket, sig) for bucket in dedup.buckets(sig, settings))


def _links(bucket: tuple[bytes, Iterable[dedup.Signature]], settings: dedup.Settings) -> Iterator[tuple]:
    return ((link.dropped, link) for link in dedup.links_in(bucket[1], settings))


class _Dedup(beam.DoFn):
    """Records that copy nothing earlier pass; the others become error rows. The
    links (one per dropped record, not per record) reach every worker whole:
    `kept_id` follows them back to the record kept."""

    def __init__(self, settings: dedup.Settings):
        self._settings = settings

    def process(self, item: tuple[int, tuple[dict, dedup.Signature]], dropped: dict) -> Iterator[Any]:
        line, (row, sig) = item
        result = stages.deduplicated(line, row, sig, dropped, self._settings)
        if result.ok:
            yield line, row
        else:
            yield TaggedOutput(ERRORS, ((line, RECORD), result.rows[0]))


class _Prompts(beam.DoFn):
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
            yield TaggedOutput(ERRORS, ((line, RECORD), stages.error("prompts", line, row, str(exc)).rows[0]))
        else:
            yield from (((line, index), prediction) for index, prediction in enumerate(rows))


class _Respond(_SandboxDoFn):
    """respond at `turn` (stages.respond_file's rules): rows that want the turn
    go to the responder a batch at a time, the others pass through."""

    def __init__(self, config: SandboxConfig, spec: Any, cache_dir: str, turn: int):
        super().__init__(config)
        self._spec = spec
        self._cache_dir = cache_dir
        self._turn = turn
        self._responder: Any = None

    def setup(self) -> None:
        super().setup()
        self._responder = self._spec.build(self._sandbox, Path(self._cache_dir))

    def teardown(self) -> None:
        if self._responder is not None:
            self._responder.__exit__(None, None, None)  # its threads, connections
            self._responder = None
        super().teardown()

    def process(self, batch: list[tuple[Key, dict]]) -> Iterator[Any]:
        asks = [(key, row) for key, row in batch if predictions.wants_turn(row, self._turn)]
        yield from ((key, row) for key, row in batch if not predictions.wants_turn(row, self._turn))
        replies = self._responder.reply([row for _, row in asks]) if asks else []
        stage = f"respond_{self._turn}"
        for (key, row), reply in zip(asks, replies):
            if reply.ok:
                yield key, predictions.with_reply(row, reply, self._responder.name)
            elif self._turn == 1:
                failed = stages.error(stage, key[0], row, f"the teacher failed: {reply.error}", row=row)
                yield TaggedOutput(ERRORS, (key, failed.rows[0]))
            else:  # a failed revision keeps the row, noting why
                yield key, {**row, "revision_errors": [*row.get("revision_errors", []),
                                                       {"turn": self._turn, "error": reply.error}]}


class _Verify(_SandboxDoFn):
    """verify on a batch: its input predictions run side by side on the sandbox."""

    def __init__(self, config: SandboxConfig, reveal_expected: bool, timeout_s: float):
        super().__init__(config)
        self._reveal_expected = reveal_expected
        self._timeout_s = timeout_s

    def process(self, batch: list[tuple[Key, dict]]) -> Iterator[tuple[Key, dict]]:
        verified = predictions.verify_rows([row for _, row in batch], self._sandbox, self._reveal_expected,
                                           self._timeout_s)
        yield from ((key, row) for (key, _), row in zip(batch, verified))


def _assemble(item: tuple[Key, dict]) -> tuple[Key, dict]:
    return item[0], predictions.assemble_row(item[1])


def _write_sorted(rows: list[tuple[Key, dict]], path: str, counter: str) -> None:
    """Write rows in key order, as driver.py writes them (one JSON object a line);
    the text goes to a temporary file renamed into place, so a reader never sees
    half a file and a retried step writes the same bytes again."""
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in _in_order(rows)]
    partial = path + ".partial"
    with FileSystems.create(partial) as f:
        f.write("".join(lines).encode("utf-8"))
    FileSystems.rename([partial], [path])
    Metrics.counter(NAMESPACE, counter).inc(len(lines))


def _in_order(rows: Iterable[tuple[Key, dict]]) -> list[dict]:
    # Keys are unique (a row leaves at its first error), the text only breaks
    # ties a future stage might introduce.
    keyed = sorted((key, json.dumps(row, ensure_ascii=False, sort_keys=True), row) for key, row in rows)
    return [row for _, _, row in keyed]


@gin.configurable
def run_beam_pipeline(source: str | Path, out_dir: str | Path, *, seed: int = 0, max_calls: int = 1000,
                      max_pairs: int = 10, ios_timeout_s: float = 20.0, determinism: bool = True,
                      deterministic_min_pairs: int = 2, decontaminate_against: Sequence[Any] | None = None,
                      decontaminate_n: int = decontaminate.DEFAULT_N,
                      dedup_threshold: float | None = dedup.DEFAULT_THRESHOLD, per_task: int = 3,
                      rounds: int = 1, turn_teachers: Sequence[Any] = (TraceTeacherSpec(),),
                      reveal_expected: bool = False, sandbox_workers: int = 1,
                      python: str | None = None, batch_size: int = 64, cache_dir: str | None = None,
                      beam_args: Sequence[str] = ()) -> dict:
    """Run ios through assemble over the unified records in `source`, writing
    `out_dir/examples.jsonl` and `out_dir/errors.jsonl`; returns the counts
    {"records", "examples", "errors"}. The settings mean what run_pipeline's do.

    sandbox_workers: slots of each DoFn instance's sandbox.
    batch_size: the most rows one batch takes to the sandbox or the teacher.
    cache_dir: a chat teacher's reply cache (default `out_dir/teacher_cache`).
    beam_args: Beam's own flags, passed through (runner, its options, parallelism).
    """
    source, out_dir = str(source), str(out_dir)
    if not FileSystems.exists(source):
        raise PipelineError(f"the source {source} does not exist")
    if rounds < 0:
        raise PipelineError(f"rounds must be 0 or more, got {rounds}")
    if not turn_teachers:
        raise PipelineError("turn_teachers is empty: name at least the teacher of the first turn")
    try:
        settings = ios.IOSettings(seed=seed, max_calls=max_calls, max_pairs=max_pairs, timeout_s=ios_timeout_s,
                                  determinism=determinism, deterministic_min_pairs=deterministic_min_pairs)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    benchmarks = benchmarks_of(decontaminate_against)
    if benchmarks:
        try:  # on the launcher too: a missing or useless benchmark fails here, not on a worker
            decontaminate.build_index(benchmarks, decontaminate_n)
        except ValueError as exc:
            raise PipelineError(f"decontamination: {exc}") from None
    dedup_settings = dedup_settings_of(dedup_threshold)
    config = SandboxConfig(workers=sandbox_workers, **({"python": python} if python else {}))
    config.worker_count()  # a bad count fails here, not on a worker
    if not FileSystems.exists(out_dir):
        FileSystems.mkdirs(out_dir)
    cache_dir = cache_dir or FileSystems.join(out_dir, "teacher_cache")
    try:
        pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args)))
    except ValueError as exc:  # Beam's words name the valid runners
        raise PipelineError(f"beam_args {list(beam_args)} do not make a pipeline: {exc}") from exc

    def batched(name: str, pcoll):
        return pcoll | f"Batch{name}" >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)

    errors = []
    parsed = (pipeline
              | "Source" >> beam.Create([source])
              | "Read" >> beam.FlatMap(_read_lines)
              | "Spread" >> beam.Reshuffle()
              | "Parse" >> beam.ParDo(_Parse()).with_outputs(ERRORS, main="records"))
    errors.append(parsed[ERRORS])
    found = batched("IOs", parsed.records) | "IOs" >> beam.ParDo(_IOs(config, settings)).with_outputs(
        ERRORS, main="rows")
    errors.append(found[ERRORS])
    records = found.rows
    if benchmarks:
        clean = records | "Decontaminate" >> beam.ParDo(_Decontaminate(benchmarks, decontaminate_n)).with_outputs(
            ERRORS, main="rows")
        errors.append(clean[ERRORS])
        records = clean.rows
    if dedup_settings is not None:
        signed = records | "Sign" >> beam.ParDo(_Sign(dedup_settings)).with_outputs(ERRORS, SIGNATURES, main="rows")
        errors.append(signed[ERRORS])
        links = (signed[SIGNATURES]
                 | "Buckets" >> beam.FlatMap(_bucketed, dedup_settings)
                 | "GroupBuckets" >> beam.GroupByKey()
                 | "Links" >> beam.FlatMap(_links, dedup_settings)
                 | "Earliest" >> beam.CombinePerKey(dedup.earliest))
        unique = signed.rows | "Dedup" >> beam.ParDo(_Dedup(dedup_settings), beam.pvalue.AsDict(links)).with_outputs(
            ERRORS, main="rows")
        errors.append(unique[ERRORS])
        records = unique.rows
    prompted = records | "Prompts" >> beam.ParDo(_Prompts(seed, per_task)).with_outputs(
        ERRORS, main="rows")
    errors.append(prompted[ERRORS])
    rows = prompted.rows
    for turn in range(1, rounds + 2):
        spec = turn_teachers[min(turn, len(turn_teachers)) - 1]
        answered = batched(f"Respond{turn}", rows) | f"Respond{turn}" >> beam.ParDo(
            _Respond(config, spec, cache_dir, turn)).with_outputs(ERRORS, main="rows")
        errors.append(answered[ERRORS])
        rows = batched(f"Verify{turn}", answered.rows) | f"Verify{turn}" >> beam.ParDo(
            _Verify(config, reveal_expected, ios_timeout_s))
    _ = (rows | "Assemble" >> beam.Map(_assemble)
         | "GatherExamples" >> beam.combiners.ToList()
         | "WriteExamples" >> beam.Map(_write_sorted, FileSystems.join(out_dir, "examples.jsonl"),
                                       "examples"))
    _ = (errors | "AllErrors" >> beam.Flatten()
         | "GatherErrors" >> beam.combiners.ToList()
         | "WriteErrors" >> beam.Map(_write_sorted, FileSystems.join(out_dir, "errors.jsonl"), "errors"))
    result = pipeline.run()
    state = result.wait_until_finish()
    if state != PipelineState.DONE:
        raise PipelineError(f"the Beam pipeline ended in state {state}")
    return {name: _counter(result, name) for name in ("records", "examples", "errors")}


def _counter(result: PipelineResult, name: str) -> int:
    """A counter's committed value (attempted where a runner commits none)."""
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE).with_name(name))["counters"]
    return sum(item.committed if item.committed is not None else item.attempted for item in found)


# run_pipeline's settings that mean the same here; `workers` (the local pool's
# slots) has no counterpart: the runner's parallelism times sandbox_workers.
SHARED_SETTINGS = ("source", "seed", "max_calls", "max_pairs", "ios_timeout_s", "determinism",
                   "deterministic_min_pairs", "decontaminate_against", "decontaminate_n", "dedup_threshold",
                   "per_task", "rounds", "turn_teachers", "reveal_expected", "python")


def run_configured(work_dir: str | Path, beam_args: Sequence[str] = ()) -> dict:
    """The gin-configured run (the bindings of `run_pipeline`, so one recipe
    serves both engines) on Beam, then the `write` stage into
    `work_dir/tfrecords` as the local run does. Returns the counts and shards."""
    from codeio_jax.data.pipeline import write_examples

    bound = gin.get_bindings("run_pipeline")
    if bound.get("transform_teacher") is not None:
        raise PipelineError("the Beam pipeline starts from unified records: run `codeio-jax transform` "
                            "first, or the local pipeline")
    # None is a setting too (no dedup stage; CRUXEval as the benchmark), except for the source.
    settings = {name: bound[name] for name in SHARED_SETTINGS if name in bound}
    settings["source"] = settings.get("source") or str(ios.DEFAULT_CORPUS)
    counts = run_beam_pipeline(out_dir=work_dir, beam_args=beam_args, **settings)
    written = write_examples(Path(work_dir) / "examples.jsonl", Path(work_dir) / "tfrecords",
                             bound.get("shards", 4))
    return {**counts, "shards": written.files}
