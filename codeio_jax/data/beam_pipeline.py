"""The data pipeline as an Apache Beam pipeline, for corpora that outgrow one machine.

The same per-record functions as the local driver (pipeline.py), as transforms:

    ReadSource (byte ranges of every file, spread over the workers) --> Parse
      [raw code --Transform-->] unified records --ios--> Decontaminate
      --Sign--> Dedup (beside it: signatures --GroupByKey bucket--> the earliest
      copy of each record, a side input) --> Prompts (fan-out)
      --Respond_1--> Verify_1 [--Respond_k--> Verify_k per round] --Assemble
      --> WriteShards: tfrecords/codeio_examples.{tfrecord,jsonl}-*-of-N
    [released rows --Import--> examples --> WriteShards]
    every stage's error rows --Flatten--> WriteShards: tfrecords/codeio_errors.jsonl-*-of-N
    both sets' counts --> tfrecords/codeio_examples.counts.json

The runner is whatever `beam_args` name (`--runner=DataflowRunner --project=...`,
`--runner=FlinkRunner --flink_master=...`, `--runner=SparkRunner ...`); without
one, Beam's default, the DirectRunner. Workers need this package installed
(`--setup_file`), and a chat teacher's cache folder only helps where workers share it.

Determinism: nothing is gathered and no order is kept. Each line is named by its
file and byte offset, each row's shard and its place in it come from its key
(sharding.py), so every runner and every number of workers write the bytes the
local driver writes. Every stage's output depends only on its element, never on
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
from codeio_jax.data import shards as sharding
from codeio_jax.data.beam_io import ReadSource, WriteShards
from codeio_jax.data.determinism import recheck_sandbox
from codeio_jax.data.pipeline import (STARTS, ChatTeacherSpec, PipelineError, TraceTeacherSpec, benchmarks_of,
                                      dedup_settings_of, first_stage, source_files)
from codeio_jax.execution import Sandbox, SandboxConfig
from codeio_jax.records import MAX_LINE_BYTES, LineError, RecordError, UnifiedRecord, parse_line, unified_or_error

ERRORS = "errors"
SIGNATURES = "signatures"
Key = tuple[int, int]  # (the line's position in the source, prediction row index)
NAMESPACE = "codeio"


class _Parse(beam.DoFn):
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
                yield TaggedOutput(ERRORS, found.to_dict())


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
            yield TaggedOutput(ERRORS, result.rows[0])


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
            yield TaggedOutput(ERRORS, failed.rows[0])
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
            yield TaggedOutput(ERRORS, result.rows[0])


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
            yield TaggedOutput(ERRORS, stages.error("prompts", line, row, str(exc)).rows[0])
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
                yield TaggedOutput(ERRORS, failed.rows[0])
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


def _assemble(item: tuple[Key, dict]) -> dict:
    return predictions.assemble_row(item[1])


class _Transform(beam.DoFn):
    """The transform stage on a batch of raw rows: one teacher per DoFn
    instance, its reply cache in the shared `cache_dir`."""

    def __init__(self, spec: ChatTeacherSpec, cache_dir: str):
        self._spec, self._cache_dir = spec, cache_dir
        self._responder: Any = None

    def setup(self) -> None:
        self._responder = self._spec.build(None, Path(self._cache_dir))

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


def _to_record(item: tuple[int, dict]) -> Iterator[Any]:
    """A transformed row as the ios stage reads it back (records.unified_or_error)."""
    at, row = item
    found = unified_or_error(json.loads(json.dumps(row, ensure_ascii=False)), None, None, None)
    if isinstance(found, LineError):
        yield TaggedOutput(ERRORS, ios.IOResult.unreadable(found).to_dict())
    else:
        yield at, found


def _import(item: tuple[int, Any]) -> Iterator[Any]:
    result = stages.imported(item[0], item[1])
    yield result.rows[0] if result.ok else TaggedOutput(ERRORS, result.rows[0])


def _counts_file(examples: dict, errors: dict, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(sharding.counts_json(examples, errors["rows"]).encode("utf-8"))


@gin.configurable
def run_beam_pipeline(source: str | Path | None, out_dir: str | Path, *, start: str = "auto", seed: int = 0,
                      max_calls: int = 1000, max_pairs: int = 10, ios_timeout_s: float = 20.0,
                      determinism: bool = True, deterministic_min_pairs: int = 2,
                      decontaminate_against: Sequence[Any] | None = None,
                      decontaminate_n: int = decontaminate.DEFAULT_N,
                      dedup_threshold: float | None = dedup.DEFAULT_THRESHOLD, per_task: int = 3,
                      rounds: int = 1, turn_teachers: Sequence[Any] = (TraceTeacherSpec(),),
                      transform_teacher: Any = None, reveal_expected: bool = False, shards: int = 4,
                      sandbox_workers: int = 1, python: str | None = None, batch_size: int = 64,
                      cache_dir: str | None = None, beam_args: Sequence[str] = ()) -> dict:
    """Run every stage over `source` (a path or a glob, local or any Beam
    filesystem; default: the embedded corpus), writing the shards into
    `out_dir/tfrecords` as the local driver's `write` stage does. Returns the
    counts {"records", "examples", "errors"}. The settings mean what
    run_pipeline's do.

    sandbox_workers: slots of each DoFn instance's sandbox.
    batch_size: the most rows one batch takes to the sandbox or the teacher.
    cache_dir: a chat teacher's reply cache (default `out_dir/teacher_cache`).
    beam_args: Beam's own flags, passed through (runner, its options, parallelism).
    """
    files = source_files(source)
    if start == "auto":
        start = first_stage(files)
    if start not in STARTS:
        raise PipelineError(f"start must be 'auto' or one of {STARTS}, got {start!r}")
    if start == "transform" and not isinstance(transform_teacher, ChatTeacherSpec):
        raise PipelineError("the source is raw code, which only a model can transform: set "
                            "run_pipeline.transform_teacher = @ChatTeacherSpec()")
    if rounds < 0:
        raise PipelineError(f"rounds must be 0 or more, got {rounds}")
    if not turn_teachers:
        raise PipelineError("turn_teachers is empty: name at least the teacher of the first turn")
    try:
        settings = ios.IOSettings(seed=seed, max_calls=max_calls, max_pairs=max_pairs, timeout_s=ios_timeout_s,
                                  determinism=determinism, deterministic_min_pairs=deterministic_min_pairs)
        example_shards = sharding.ShardSet(sharding.EXAMPLES, shards, sharding.FORMATS,
                                         sharding.join(str(out_dir), "tfrecords"))
        error_shards = sharding.ShardSet(sharding.ERRORS, shards, ("jsonl",), example_shards.folder)
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
    try:
        pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args)))
    except ValueError as exc:  # Beam's words name the valid runners
        raise PipelineError(f"beam_args {list(beam_args)} do not make a pipeline: {exc}") from exc
    out_dir = str(out_dir)
    if not FileSystems.exists(out_dir):
        FileSystems.mkdirs(out_dir)
    cache_dir = cache_dir or sharding.join(out_dir, "teacher_cache")

    def batched(name: str, pcoll):
        return pcoll | f"Batch{name}" >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)

    errors = []
    parsed = (pipeline
              | "Read" >> ReadSource(files)
              | "Parse" >> beam.ParDo(_Parse(start)).with_outputs(ERRORS, main="rows"))
    errors.append(parsed[ERRORS])
    if start == "import":
        imported = parsed.rows | "Import" >> beam.FlatMap(_import).with_outputs(ERRORS, main="rows")
        errors.append(imported[ERRORS])
        examples = imported.rows
    else:
        records = parsed.rows
        if start == "transform":
            unified = batched("Transform", records) | "Transform" >> beam.ParDo(
                _Transform(transform_teacher, cache_dir)).with_outputs(ERRORS, main="rows")
            errors.append(unified[ERRORS])
            readable = unified.rows | "AsRecords" >> beam.FlatMap(_to_record).with_outputs(ERRORS, main="rows")
            errors.append(readable[ERRORS])
            records = readable.rows
        examples = _predictions(pipeline, records, errors, batched, config, settings, benchmarks,
                                decontaminate_n, dedup_settings, seed, per_task, rounds, turn_teachers,
                                cache_dir, reveal_expected, ios_timeout_s)
    example_counts = examples | "WriteExamples" >> WriteShards(
        example_shards, sharding.join(out_dir, ".scratch-examples"))
    error_counts = (errors | "AllErrors" >> beam.Flatten()
                    | "WriteErrors" >> WriteShards(error_shards, sharding.join(out_dir, ".scratch-errors")))
    _ = example_counts | "Counts" >> beam.Map(_counts_file, beam.pvalue.AsSingleton(error_counts),
                                              example_shards.counts_path())
    result = pipeline.run()
    state = result.wait_until_finish()
    if state != PipelineState.DONE:
        raise PipelineError(f"the Beam pipeline ended in state {state}")
    with FileSystems.open(example_shards.counts_path()) as f:
        counts = json.loads(f.read())
    return {"records": _counter(result, "records"), "examples": counts["examples"], "errors": counts["errors"]}


def _predictions(pipeline, records, errors: list, batched, config: SandboxConfig, settings, benchmarks,
                 decontaminate_n: int, dedup_settings, seed: int, per_task: int, rounds: int,
                 turn_teachers: Sequence[Any], cache_dir: str, reveal_expected: bool, ios_timeout_s: float):
    """Unified records to assembled examples: ios through assemble."""
    found = batched("IOs", records) | "IOs" >> beam.ParDo(_IOs(config, settings)).with_outputs(
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
    prompted = records | "Prompts" >> beam.ParDo(_Prompts(seed, per_task)).with_outputs(ERRORS, main="rows")
    errors.append(prompted[ERRORS])
    rows = prompted.rows
    for turn in range(1, rounds + 2):
        spec = turn_teachers[min(turn, len(turn_teachers)) - 1]
        answered = batched(f"Respond{turn}", rows) | f"Respond{turn}" >> beam.ParDo(
            _Respond(config, spec, cache_dir, turn)).with_outputs(ERRORS, main="rows")
        errors.append(answered[ERRORS])
        rows = batched(f"Verify{turn}", answered.rows) | f"Verify{turn}" >> beam.ParDo(
            _Verify(config, reveal_expected, ios_timeout_s))
    return rows | "Assemble" >> beam.Map(_assemble)


def _counter(result: PipelineResult, name: str) -> int:
    """A counter's committed value (attempted where a runner commits none)."""
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE).with_name(name))["counters"]
    return sum(item.committed if item.committed is not None else item.attempted for item in found)


# run_pipeline's settings that mean the same here; `workers` (the local pool's
# slots) has no counterpart: the runner's parallelism times sandbox_workers.
SHARED_SETTINGS = ("source", "start", "seed", "max_calls", "max_pairs", "ios_timeout_s", "determinism",
                   "deterministic_min_pairs", "decontaminate_against", "decontaminate_n", "dedup_threshold",
                   "per_task", "rounds", "turn_teachers", "transform_teacher", "reveal_expected", "shards",
                   "python")


def run_configured(work_dir: str | Path, beam_args: Sequence[str] = ()) -> dict:
    """The gin-configured run (the bindings of `run_pipeline`, so one recipe
    serves both engines) on Beam, into `work_dir`. Returns the counts."""
    bound = gin.get_bindings("run_pipeline")
    # None is a setting too (no dedup stage; CRUXEval as the benchmark).
    settings = {name: bound[name] for name in SHARED_SETTINGS if name in bound}
    return run_beam_pipeline(out_dir=work_dir, beam_args=beam_args, **{"source": None, **settings})
