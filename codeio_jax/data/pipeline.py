"""Every stage in order over a work folder, configured by gin (gin/data/*.gin).

    <source> --transform--> unified.jsonl --ios--> with_ios.jsonl --decontaminate-->
    decontaminated.jsonl --dedup--> deduplicated.jsonl --prompts--> prompts.jsonl
    --respond_1--> responses_1.jsonl
    --verify_1--> verdicts_1.jsonl
    [--respond_k--> responses_k.jsonl --verify_k--> verdicts_k.jsonl, per round]
    --assemble--> examples.jsonl --write--> tfrecords/codeio_examples.{tfrecord,jsonl}-*-of-*
                                            and every stage's errors: tfrecords/codeio_errors.jsonl-*-of-*

Each arrow is one resumable stage (stages.py), each file has its
`.errors.jsonl` beside it. A run killed at any moment and started again skips
the finished stages, resumes the one it was in, and ends with the same bytes
as an uninterrupted run (shards included: each is written whole under a
temporary name, then renamed). The source is a path or a glob of JSONL files
(data/source.py); its rows' format picks the first stage: raw code starts at
`transform`, unified records (the embedded corpus, the authors' parsed records)
at `ios`, rows of the released dataset at `import`, which makes them examples.
The shards are the Beam pipeline's to the byte (shards.py). At the end,
report.py reads the stage files into `report.json` and `report.md`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import gin

from codeio_jax.data.determinism import recheck_sandbox
from codeio_jax.data import decontaminate, dedup, ios, report as quality, stages
from codeio_jax.data.driver import Result, Summary
from codeio_jax.data.respond import ChatResponder, Responder, TraceResponder
from codeio_jax.execution import Limits, ProtectionsMissing, Sandbox, SandboxConfig
from codeio_jax.records import FIRST_STAGE, count_rows, open_atomic
from codeio_jax.teachers.trace_capture import COUNTED_EVENTS, DETAIL_EVENTS
from codeio_jax.teachers.trace_render import MAX_CHARS


class PipelineError(ValueError):
    """A pipeline that cannot run as configured; says what to change."""


# What a run needs of the sandbox at the least: no network for the programs it
# runs, and no way for them to gain privileges.
REQUIRED_PROTECTIONS = ("network_namespace", "no_new_privs")


# A benchmark to keep out of the data: `@Benchmark()` in gin, scoped for several
# (`humaneval/Benchmark.path = ...`, `humaneval/Benchmark.code_field = "prompt"`).
gin.external_configurable(decontaminate.Benchmark, "Benchmark")


def benchmarks_of(decontaminate_against: Sequence[Any] | None) -> tuple:
    """The Benchmarks a setting names: None is CRUXEval's 800, a path is a JSONL
    file with a `code` field."""
    if decontaminate_against is None:
        from codeio_jax.verify.cruxeval import DEFAULT_DATA

        return (decontaminate.Benchmark(str(DEFAULT_DATA), "cruxeval"),)
    return tuple(item if isinstance(item, decontaminate.Benchmark) else decontaminate.Benchmark(str(item))
                 for item in decontaminate_against)


def dedup_settings_of(threshold: float | None) -> dedup.Settings | None:
    """The dedup stage's settings for a threshold; None: no such stage."""
    try:
        return None if threshold is None else dedup.Settings(threshold=threshold)
    except ValueError as exc:
        raise PipelineError(f"{exc}; set run_pipeline.dedup_threshold (None turns the stage off)") from None


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TraceTeacherSpec:
    """The offline teacher: chains of thought from the program's own execution."""

    max_chars: int = MAX_CHARS
    timeout_s: float = 20.0
    # Events recorded in detail, then only counted, before the code runs on
    # untraced (teachers/trace_capture.py); a trace's cost is bounded by them.
    detail_events: int = DETAIL_EVENTS
    counted_events: int = COUNTED_EVENTS

    def build(self, sandbox: Sandbox, cache_dir: str | Path) -> Responder:
        from codeio_jax.teachers.trace import TraceTeacher

        return TraceResponder(TraceTeacher(sandbox, Limits(timeout_s=self.timeout_s), self.max_chars,
                                           self.detail_events, self.counted_events))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ChatTeacherSpec:
    """Any OpenAI-compatible chat-completions server (DeepSeek, OpenAI, vLLM,
    SGLang, `codeio-jax serve`). Replies are cached under the work folder, so a
    rerun never pays twice."""

    base_url: str = gin.REQUIRED
    model: str = gin.REQUIRED
    api_key_env: str | None = "OPENAI_API_KEY"
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    params: tuple = ()  # sampling parameters as (name, value) pairs: part of the cache key

    def build(self, sandbox: Sandbox, cache_dir: str | Path) -> Responder:
        from codeio_jax.teachers.openai_compatible import OpenAICompatibleTeacher

        teacher = OpenAICompatibleTeacher(
            self.base_url, self.model, api_key_env=self.api_key_env,
            max_concurrency=self.max_concurrency, timeout_s=self.timeout_s,
            max_retries=self.max_retries, cache_dir=cache_dir, params=dict(self.params))
        # Four waves of requests per batch: the batch boundary (the stage waits
        # for a batch's last reply) then costs a small share of the time.
        return ChatResponder(teacher, f"openai:{self.model}", batch_size=4 * self.max_concurrency)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LocalTeacherSpec:
    """Our own model, sampled in this process (teachers/local.py): a Hugging Face
    folder with its tokenizer.json, e.g. a model trained here and exported with
    `codeio-jax convert jax-to-hf`. Offline, like the trace teacher, but a model:
    its first turns are what the trace teacher's revisions work on."""

    model: str = gin.REQUIRED
    family: str | None = None  # chat format; default: from the model's config
    max_new_tokens: int = 1024
    temperature: float = 0.0
    batch_size: int = 8

    def build(self, sandbox: Sandbox, cache_dir: str | Path) -> Responder:
        from codeio_jax.teachers.local import LocalTeacher

        teacher = LocalTeacher(self.model, family=self.family, max_new_tokens=self.max_new_tokens,
                               temperature=self.temperature, batch_size=self.batch_size)
        return ChatResponder(teacher, f"local:{Path(self.model).name}", batch_size=4 * self.batch_size)


@dataclasses.dataclass
class StageReport:
    name: str
    summary: Summary
    seconds: float


@dataclasses.dataclass
class PipelineReport:
    work_dir: Path
    stages: list[StageReport]
    examples: Path
    shards: list[Path]
    teacher_usage: dict[str, dict]

    def stage(self, name: str) -> StageReport:
        return next(report for report in self.stages if report.name == name)


# progress(stage name, input rows): a callback for each input row's Result, or None.
Progress = Callable[[str, int], Callable[[Result], None] | None]


@gin.configurable
def run_pipeline(work_dir: str | Path = gin.REQUIRED, source: str | Path | None = None,
                 start: str = "auto", seed: int = 0, max_calls: int = 1000, max_pairs: int = 10,
                 ios_timeout_s: float = 20.0, determinism: bool = True, deterministic_min_pairs: int = 2,
                 decontaminate_against: Sequence[Any] | None = None, decontaminate_n: int = decontaminate.DEFAULT_N,
                 dedup_threshold: float | None = dedup.DEFAULT_THRESHOLD, per_task: int = 3, rounds: int = 1,
                 turn_teachers: Sequence[Any] = (TraceTeacherSpec(),), transform_teacher: Any = None,
                 reveal_expected: bool = False, shards: int = 4, workers: int | None = None,
                 python: str | None = None, require_protections: Sequence[str] = REQUIRED_PROTECTIONS,
                 progress: Progress | None = None) -> PipelineReport:
    """Run every stage over `source` (default: the embedded corpus) in `work_dir`.

    source: a path or a glob of JSONL files (`corpus/*.jsonl`, `**` for any depth).
    start: "transform" (raw code rows with `content`), "ios" (unified records),
      "import" (released CodeIO-PyEdu-Reasoning rows), or "auto": whichever
      format the source's files hold (files of different formats are an error).
    determinism: rerun every kept pair in another world (data/determinism.py)
      and keep those that held; a record where one changed needs
      `deterministic_min_pairs` that held, else it is an error row.
    decontaminate_against: benchmarks (`Benchmark`s, or paths of JSONL files with
      a `code` field) whose programs the records' code must not overlap
      (data/decontaminate.py; spans of `decontaminate_n` tokens); None:
      CRUXEval's 800; empty: no such stage. The hits per benchmark go to
      `decontamination.json` in the work folder.
    dedup_threshold: records whose code is the same program, or whose estimated
      Jaccard similarity is at least this, keep one copy (data/dedup.py);
      None: no such stage.
    rounds: revision rounds after the first turn (CodeI/O: 0; CodeI/O++: 1).
    turn_teachers: who answers turn 1, 2, ...; the last one answers every later turn.
    transform_teacher: a chat teacher for raw code; the trace teacher cannot transform.
    shards: files of each kind the examples and the error rows are spread over
      (by a hash of their id).
    require_protections: sandbox protections (execution.PROTECTIONS) without
      which no code runs: the run stops at once here, and on a Beam worker that
      lacks one every row it gets becomes an error row saying so.
    """
    files = source_files(source)
    start = checked_start(files, start, transform_teacher, rounds, turn_teachers)
    benchmarks = benchmarks_of(decontaminate_against)
    try:
        index = decontaminate.build_index(benchmarks, decontaminate_n) if benchmarks else None
    except ValueError as exc:  # BenchmarkError, a bad n
        raise PipelineError(f"decontamination: {exc}; set run_pipeline.decontaminate_against "
                            "(an empty list turns the stage off)") from None
    dedup_settings = dedup_settings_of(dedup_threshold)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "teacher_cache"
    reports: list[StageReport] = []
    errors_of: dict[str, Path] = {}

    def step(name: str, run: Callable[..., Summary], source: Path | list[str], dest: Path, *args,
             **kwargs) -> Path:
        started = time.perf_counter()
        errors = errors_of[name] = dest.with_name(dest.stem + ".errors.jsonl")
        summary = run(source, dest, errors, *args, **kwargs,
                      on_result=progress(name, count_rows(source)) if progress else None)
        reports.append(StageReport(name, summary, time.perf_counter() - started))
        return dest

    config = sandbox_config(workers, python, require_protections)
    usage: dict[str, dict] = {}
    if start == "import":  # released rows are examples already
        examples = step("import", stages.import_file, files, work / "examples.jsonl")
        return _written(work, reports, errors_of, examples, shards, None, usage)
    with _sandboxes(config, determinism) as (sandbox, recheck):
        current = files
        if start == "transform":
            responder = transform_teacher.build(sandbox, cache)
            with responder:
                current = step("transform", stages.transform_file, current, work / "unified.jsonl",
                               responder.teacher, repr(transform_teacher))
            usage["transform"] = responder.usage.as_dict()
        try:
            settings = ios.IOSettings(seed=seed, max_calls=max_calls, max_pairs=max_pairs, timeout_s=ios_timeout_s,
                                      determinism=determinism, deterministic_min_pairs=deterministic_min_pairs)
        except ValueError as exc:
            raise PipelineError(str(exc)) from None
        current = step("ios", _ios_file, current, work / "with_ios.jsonl", sandbox, settings, recheck)
        if index is not None:
            current = step("decontaminate", stages.decontaminate_file, current, work / "decontaminated.jsonl", index)
            errors = stages.read_rows(work / "decontaminated.errors.jsonl")
            with open_atomic(work / "decontamination.json", only_writer=True) as f:
                f.write(json.dumps(decontaminate.summarize(errors, index), indent=1, sort_keys=True) + "\n")
        if dedup_settings is not None:
            current = step("dedup", stages.dedup_file, current, work / "deduplicated.jsonl", dedup_settings)
        current = step("prompts", stages.prompts_file, current, work / "prompts.jsonl",
                       seed=seed, per_task=per_task)
        for turn in range(1, rounds + 2):
            spec = turn_teachers[min(turn, len(turn_teachers)) - 1]
            with spec.build(sandbox, cache) as responder:
                current = step(f"respond_{turn}", stages.respond_file, current,
                               work / f"responses_{turn}.jsonl", responder, turn, repr(spec))
            usage[f"turn_{turn}"] = responder.usage.as_dict()
            current = step(f"verify_{turn}", stages.verify_file, current, work / f"verdicts_{turn}.jsonl",
                           sandbox, reveal_expected=reveal_expected, timeout_s=ios_timeout_s)
        examples = step("assemble", stages.assemble_file, current, work / "examples.jsonl")
    return _written(work, reports, errors_of, examples, shards, work / f"verdicts_{rounds + 1}.jsonl", usage)


def _written(work: Path, reports: list[StageReport], errors_of: dict[str, Path], examples: Path, shards: int,
             verdicts: Path | None, usage: dict) -> PipelineReport:
    """The write stage, then the quality report over every stage's files."""
    started = time.perf_counter()
    written = write_examples(examples, work / "tfrecords", shards, list(errors_of.values()))
    reports.append(StageReport("write", written.summary, time.perf_counter() - started))
    quality.write(work, quality.build(reports, errors_of, verdicts, examples,
                                      {"teacher_usage": usage}))
    return PipelineReport(work, reports, examples, written.files, usage)


STARTS = ("transform", "ios", "import")


def sandbox_config(workers: int | None, python: str | None, require: Sequence[str]) -> SandboxConfig:
    try:
        config = SandboxConfig(workers=workers, require=tuple(require), **({"python": python} if python else {}))
        config.worker_count()  # a bad count fails here, not on a worker
    except ValueError as exc:
        raise PipelineError(f"{exc}; see run_pipeline.workers and run_pipeline.require_protections") from None
    return config


@contextlib.contextmanager
def _sandboxes(config: SandboxConfig, determinism: bool):
    """The run's sandbox, and the other world's where determinism wants it."""
    try:
        with Sandbox(config) as sandbox, (recheck_sandbox(config) if determinism
                                          else contextlib.nullcontext()) as recheck:
            yield sandbox, recheck
    except ProtectionsMissing as exc:
        raise PipelineError(f"{exc}: run_pipeline.require_protections") from None


def source_files(source: str | Path | None) -> list[str]:
    """The files a source setting names (a path or a glob; default: the embedded corpus)."""
    from codeio_jax.data import source as sources

    try:
        return sources.match(str(source or ios.DEFAULT_CORPUS))
    except sources.SourceError as exc:
        raise PipelineError(f"{exc}; set run_pipeline.source") from None


def checked_start(files: list[str], start: str, transform_teacher: Any, rounds: int,
                  turn_teachers: Sequence[Any]) -> str:
    """The first stage of a run (`start`, or the source's format's for "auto"),
    once the settings both engines share are checked."""
    if rounds < 0:
        raise PipelineError(f"rounds must be 0 or more, got {rounds}")
    if not turn_teachers:
        raise PipelineError("turn_teachers is empty: name at least the teacher of the first turn")
    if start == "auto":
        start = first_stage(files)
    if start not in STARTS:
        raise PipelineError(f"start must be 'auto' or one of {STARTS}, got {start!r}")
    if start == "transform" and not isinstance(transform_teacher, ChatTeacherSpec):
        raise PipelineError("the source is raw code, which only a model can transform: set "
                            "run_pipeline.transform_teacher = @ChatTeacherSpec() (the trace teacher "
                            "needs unified records), or start from unified records")
    return start


def first_stage(files: list[str]) -> str:
    """The stage a source's rows go to first, from their format."""
    from codeio_jax.data import source as sources

    try:
        return FIRST_STAGE[sources.kind_of(files)]
    except sources.SourceError as exc:
        raise PipelineError(f"{exc}; or set run_pipeline.start") from None


@dataclasses.dataclass
class Written:
    files: list[Path]  # the TFRecord shards the SeqIO tasks read
    summary: Summary
    errors: int = 0  # rows in the error shards


def write_examples(examples: Path, out_dir: Path, shards: int, error_files: Sequence[Path] = ()) -> Written:
    """The `write` stage: the examples as TFRecord and JSONL shards, the rows of
    `error_files` (every stage's errors) as JSONL shards, all in `out_dir` and
    as the Beam pipeline writes them (shards.py); skipped when the shards of
    these very inputs (same bytes, same shard count) are there."""
    from codeio_jax.data import shards as sharding
    from codeio_jax.data.driver import fingerprint

    if shards < 1:
        raise PipelineError(f"shards must be at least 1, got {shards}")
    out_dir = Path(out_dir)
    error_files = [Path(path) for path in error_files if Path(path).exists()]
    examples_set = sharding.ShardSet(sharding.EXAMPLES, shards, sharding.FORMATS, str(out_dir))
    errors_set = sharding.ShardSet(sharding.ERRORS, shards, ("jsonl",), str(out_dir))
    marker = out_dir / "write.done"
    run_id = fingerprint([examples, *error_files], "write", shards)
    counts_file = Path(examples_set.counts_path())
    expected = [Path(path) for path in examples_set.paths() + errors_set.paths()]
    if marker.exists() and marker.read_text().strip() == run_id and counts_file.exists() \
            and all(p.exists() for p in expected):
        found = json.loads(counts_file.read_text())
        return Written(_tfrecord_files(examples_set), Summary(items=found["examples"], ok=found["examples"],
                                                             already_done=True), found.get("errors", 0))
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    scratch = out_dir / ".scratch"
    shutil.rmtree(scratch, ignore_errors=True)  # the runs of a write killed before: the rmdir below needs it empty
    counts = sharding.write_local(stages.read_rows(examples), examples_set, str(scratch))
    errors = sharding.write_local((row for path in error_files for row in stages.read_rows(path)),
                                  errors_set, str(scratch))
    scratch.rmdir()
    # What the SeqIO mixtures weigh their tasks by, without reading the shards.
    counts_file.write_text(sharding.counts_json(counts, errors["rows"]))
    marker.write_text(run_id + "\n")
    return Written(_tfrecord_files(examples_set), Summary(items=counts["rows"], ok=counts["rows"]),
                   errors["rows"])


def _tfrecord_files(examples_set) -> list[Path]:
    return [Path(examples_set.path("tfrecord", shard)) for shard in range(examples_set.count)]


def _ios_file(source, dest, errors_dest, sandbox, settings, recheck, on_result=None) -> Summary:
    """The ios stage, in the shape of the others."""
    report = (lambda status: on_result(Result(status == "kept", ()))) if on_result else None
    found = ios.run_file(source, dest, errors_dest, sandbox, settings, on_record=report, recheck=recheck)
    return Summary(items=found.records, ok=found.kept, errors=found.errors, resumed_at=found.resumed_at,
                   already_done=found.already_done)
