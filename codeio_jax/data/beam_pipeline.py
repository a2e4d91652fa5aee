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
(shards.py), so every runner and every number of workers write the bytes the
local driver writes. Every stage's output depends only on its element, never on
batching or on which worker ran it.

The stages' DoFns are in beam_stages.py, the reading and the shard sinks in
beam_io.py. Each sandbox DoFn builds its own sandbox on its worker: keep
`sandbox_workers` small and let the runner's parallelism (e.g.
`--direct_num_workers`) multiply them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import apache_beam as beam
import gin
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from codeio_jax.data import decontaminate, dedup, ios
from codeio_jax.data import shards as sharding
from codeio_jax.data.beam_io import BeamFiles, ReadSource, SortedRuns, WriteShards
from codeio_jax.data.beam_stages import (BUCKET_SHARDS, ERRORS, NAMESPACE, SIGNATURES, Decontaminate, Dedup, IOs,
                                         Parse, Prompts, Respond, Sign, Transform, Verify, assemble, bucket_links,
                                         import_row, to_record, waiting_records)
from codeio_jax.data.pipeline import (REQUIRED_PROTECTIONS, PipelineError, TraceTeacherSpec, benchmarks_of,
                                      checked_start, dedup_settings_of, sandbox_config, source_files)
from codeio_jax.execution import SandboxConfig


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
                      sandbox_workers: int = 1, python: str | None = None,
                      require_protections: Sequence[str] = REQUIRED_PROTECTIONS, batch_size: int = 64,
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
    start = checked_start(files, start, transform_teacher, rounds, turn_teachers)
    try:
        settings = ios.IOSettings(seed=seed, max_calls=max_calls, max_pairs=max_pairs, timeout_s=ios_timeout_s,
                                  determinism=determinism, deterministic_min_pairs=deterministic_min_pairs)
        example_shards = sharding.ShardSet(sharding.EXAMPLES, shards, sharding.FORMATS,
                                         sharding.join(str(out_dir), "tfrecords"))
        error_shards = sharding.ShardSet(sharding.ERRORS, shards, ("jsonl",), example_shards.folder)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    benchmarks = benchmarks_of(decontaminate_against)
    try:  # here, so a missing or useless benchmark fails before the job
        index = decontaminate.build_index(benchmarks, decontaminate_n) if benchmarks else None
    except ValueError as exc:
        raise PipelineError(f"decontamination: {exc}; set run_pipeline.decontaminate_against") from None
    dedup_settings = dedup_settings_of(dedup_threshold)
    config = sandbox_config(sandbox_workers, python, require_protections)
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
              | "Parse" >> beam.ParDo(Parse(start)).with_outputs(ERRORS, main="rows"))
    errors.append(parsed[ERRORS])
    if start == "import":
        imported = parsed.rows | "Import" >> beam.FlatMap(import_row).with_outputs(ERRORS, main="rows")
        errors.append(imported[ERRORS])
        examples = imported.rows
    else:
        records = parsed.rows
        if start == "transform":
            unified = batched("Transform", records) | "Transform" >> beam.ParDo(
                Transform(transform_teacher, cache_dir)).with_outputs(ERRORS, main="rows")
            errors.append(unified[ERRORS])
            readable = unified.rows | "AsRecords" >> beam.FlatMap(to_record).with_outputs(ERRORS, main="rows")
            errors.append(readable[ERRORS])
            records = readable.rows
        examples = _predictions(records, errors, batched, config, settings, index, dedup_settings, seed, per_task,
                                rounds, turn_teachers, cache_dir, reveal_expected, ios_timeout_s,
                                sharding.join(out_dir, ".scratch-dedup"))
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
    BeamFiles().delete([sharding.join(out_dir, ".scratch-dedup")])  # the records and buckets read back
    with FileSystems.open(example_shards.counts_path()) as f:
        counts = json.loads(f.read())
    return {"records": _counter(result, "records"), "examples": counts["examples"], "errors": counts["errors"]}


RECORD_SHARDS = 16  # sorted runs of the records waiting for the dedup decision


def _predictions(records, errors: list, batched, config: SandboxConfig, settings, index,
                 dedup_settings, seed: int, per_task: int, rounds: int, turn_teachers: Sequence[Any],
                 cache_dir: str, reveal_expected: bool, ios_timeout_s: float, scratch: str):
    """Unified records to assembled examples: ios through assemble."""
    found = batched("IOs", records) | "IOs" >> beam.ParDo(IOs(config, settings)).with_outputs(
        ERRORS, main="rows")
    errors.append(found[ERRORS])
    records = found.rows
    if index is not None:
        clean = records | "Decontaminate" >> beam.ParDo(Decontaminate(index)).with_outputs(ERRORS, main="rows")
        errors.append(clean[ERRORS])
        records = clean.rows
    if dedup_settings is not None:
        # The decision needs every record's signature before any record passes:
        # the records wait on the filesystem, not in the runner or a worker.
        signed = records | "Sign" >> beam.ParDo(Sign(dedup_settings, RECORD_SHARDS)).with_outputs(
            ERRORS, SIGNATURES, main="rows")
        errors.append(signed[ERRORS])
        links = (signed[SIGNATURES]
                 | "Buckets" >> SortedRuns("dedup-buckets", BUCKET_SHARDS, sharding.join(scratch, "buckets"))
                 | "Links" >> beam.FlatMap(bucket_links, dedup_settings)
                 | "Earliest" >> beam.CombinePerKey(dedup.earliest))
        waiting = (signed.rows
                   | "Wait" >> SortedRuns("dedup-records", RECORD_SHARDS, sharding.join(scratch, "records"))
                   | "ReadBack" >> beam.FlatMap(waiting_records))
        unique = waiting | "Dedup" >> beam.ParDo(Dedup(dedup_settings), beam.pvalue.AsDict(links)).with_outputs(
            ERRORS, main="rows")
        errors.append(unique[ERRORS])
        records = unique.rows
    prompted = records | "Prompts" >> beam.ParDo(Prompts(seed, per_task)).with_outputs(ERRORS, main="rows")
    errors.append(prompted[ERRORS])
    rows = prompted.rows
    for turn in range(1, rounds + 2):
        spec = turn_teachers[min(turn, len(turn_teachers)) - 1]
        answered = batched(f"Respond{turn}", rows) | f"Respond{turn}" >> beam.ParDo(
            Respond(config, spec, cache_dir, turn)).with_outputs(ERRORS, main="rows")
        errors.append(answered[ERRORS])
        verified = batched(f"Verify{turn}", answered.rows) | f"Verify{turn}" >> beam.ParDo(
            Verify(config, reveal_expected, ios_timeout_s, turn)).with_outputs(ERRORS, main="rows")
        errors.append(verified[ERRORS])
        rows = verified.rows
    return rows | "Assemble" >> beam.Map(assemble)


def _counter(result: PipelineResult, name: str) -> int:
    """A counter's committed value (attempted where a runner commits none)."""
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE).with_name(name))["counters"]
    return sum(item.committed if item.committed is not None else item.attempted for item in found)


# run_pipeline's settings that mean the same here; `workers` (the local pool's
# slots) has no counterpart: the runner's parallelism times sandbox_workers.
SHARED_SETTINGS = ("source", "start", "seed", "max_calls", "max_pairs", "ios_timeout_s", "determinism",
                   "deterministic_min_pairs", "decontaminate_against", "decontaminate_n", "dedup_threshold",
                   "per_task", "rounds", "turn_teachers", "transform_teacher", "reveal_expected", "shards",
                   "python", "require_protections")


def run_configured(work_dir: str | Path, beam_args: Sequence[str] = ()) -> dict:
    """The gin-configured run (the bindings of `run_pipeline`, so one recipe
    serves both engines) on Beam, into `work_dir`. Returns the counts."""
    bound = gin.get_bindings("run_pipeline")
    # None is a setting too (no dedup stage; CRUXEval as the benchmark).
    settings = {name: bound[name] for name in SHARED_SETTINGS if name in bound}
    return run_beam_pipeline(out_dir=work_dir, beam_args=beam_args, **{"source": None, **settings})
