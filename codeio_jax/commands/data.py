"""Commands of the data pipeline: all stages under gin (`pipeline`), or one stage at a time.

Each handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from codeio_jax.commands.common import (CommandError, Progress, errors_path, gin_flags, io_flags, parse_gin_flags,
                                        print_stage, rows_in, sandbox_flags, sandbox_for)


def add_commands(sub) -> None:
    pipeline = sub.add_parser(
        "pipeline", help="run every data stage (gin-configured), raw code or unified records to examples",
        description="Run every stage over a work folder. T5X-style gin flags: --gin_file (repeatable), "
                    "--gin_search_paths, --gin.NAME=VALUE (e.g. --gin.run_pipeline.rounds=0).")
    gin_flags(pipeline, "gin/data/*.gin")
    pipeline.add_argument("--work_dir", default=None,
                          help="binds run_pipeline.work_dir (with --engine beam also gs:// and Beam's other filesystems)")
    pipeline.add_argument("--engine", choices=["local", "beam"], default="local",
                          help="beam: the same stages on Apache Beam; flags after `--` go to Beam "
                               "(e.g. -- --runner=DataflowRunner --project=...); DirectRunner by default")
    pipeline.add_argument("beam_args", nargs="*", help=argparse.SUPPRESS)
    pipeline.set_defaults(handler=_pipeline)

    write = sub.add_parser("write", help="examples (JSONL) into TFRecord shards for the SeqIO tasks")
    write.add_argument("--in", dest="inp", required=True, type=Path, help="examples (the assemble stage's output)")
    write.add_argument("--out-dir", required=True, type=Path, help="folder for the shards")
    write.add_argument("--shards", type=int, default=4)
    write.set_defaults(handler=_write)

    prompts = sub.add_parser("prompts", help="prediction prompts (3 + 3 per record) for records with pairs")
    io_flags(prompts)
    prompts.add_argument("--seed", type=int, default=0)
    prompts.add_argument("--per-task", type=int, default=3, help="prompts per task and record")
    prompts.set_defaults(handler=_prompts)

    respond = sub.add_parser("respond", help="a teacher answers one turn of prediction rows")
    io_flags(respond)
    respond.add_argument("--turn", type=int, default=1, help="1 answers the prompt; 2+ revise a wrong answer")
    _teacher_flags(respond, default="trace")
    sandbox_flags(respond)
    respond.set_defaults(handler=_respond)

    transform = sub.add_parser("transform", help="raw code rows into unified records, by a chat teacher")
    io_flags(transform)
    _teacher_flags(transform, default=None)
    transform.set_defaults(handler=_transform)

    assemble = sub.add_parser("assemble", help="verified prediction rows into examples (the released shape)")
    io_flags(assemble)
    assemble.set_defaults(handler=_assemble)

    imported = sub.add_parser("import", help="rows of the released CodeIO-PyEdu-Reasoning shape, as examples")
    io_flags(imported)
    imported.set_defaults(handler=_import)


def _teacher_flags(parser: argparse.ArgumentParser, default: str | None) -> None:
    choices = ["trace", "openai"] if default == "trace" else ["openai"]
    parser.add_argument("--teacher", choices=choices, default=default or "openai")
    parser.add_argument("--base-url", help="openai: the server, e.g. https://api.deepseek.com/v1")
    parser.add_argument("--model", help="openai: the model name")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="openai: the environment variable holding the key")
    parser.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=JSON",
                        help="openai: a sampling parameter, e.g. temperature=0.7 (repeatable)")


def _teacher_spec(args):
    from codeio_jax.data.pipeline import ChatTeacherSpec, TraceTeacherSpec

    if args.teacher == "trace":
        return TraceTeacherSpec()
    if not args.base_url or not args.model:
        raise CommandError("the openai teacher needs --base-url and --model")
    params = []
    for item in args.param:
        name, sep, value = item.partition("=")
        try:
            params.append((name, json.loads(value)))
        except ValueError:
            sep = ""
        if not sep or not name:
            raise CommandError(f"--param wants NAME=JSON (e.g. temperature=0.7), got {item!r}")
    return ChatTeacherSpec(base_url=args.base_url, model=args.model, api_key_env=args.api_key_env,
                           max_concurrency=args.concurrency, params=tuple(params))


def _pipeline(args) -> int:
    from codeio_jax.data import pipeline

    parse_gin_flags(args, [f"run_pipeline.work_dir = {args.work_dir!r}"] if args.work_dir else [])
    work_dir = args.work_dir or _bound_work_dir()
    if args.engine == "beam":
        from codeio_jax.data import beam_pipeline

        try:
            found = beam_pipeline.run_configured(work_dir, args.beam_args)
        except pipeline.PipelineError as exc:
            raise CommandError(str(exc)) from None
        print(f"pipeline on Beam: {found['records']} rows read, {found['examples']} examples, "
              f"{found['errors']} error rows; shards in {str(work_dir).rstrip('/')}/tfrecords")
        return 0
    if args.beam_args:
        raise CommandError(f"unrecognized arguments: {' '.join(args.beam_args)} (Beam flags need --engine beam)")
    bars: list[Progress] = []

    def progress(stage, total=None):
        # A stage starts when the one before it has finished: that one's line goes out now.
        if bars:
            bars[-1].close()
        bars.append(Progress(total, "rows", desc=stage, final_line=True))
        return lambda result, bar=bars[-1]: bar.count("ok" if result.ok else "error", 1)

    try:
        report = pipeline.run_pipeline(progress=progress)
    except pipeline.PipelineError as exc:
        raise CommandError(str(exc)) from None
    finally:
        for bar in bars:
            bar.close()
    total = sum(stage.seconds for stage in report.stages) or 1.0
    print(f"pipeline: {report.work_dir}")
    for stage in report.stages:
        summary = stage.summary
        note = " (already done)" if summary.already_done else ""
        print(f"  {stage.name:<13} {summary.items:>6} in {summary.ok:>6} out {summary.errors:>5} errors"
              f" {stage.seconds:>7.2f} s {100 * stage.seconds / total:>5.1f}%{note}")
    for turn, usage in report.teacher_usage.items():
        print(f"  teacher {turn}: " + (", ".join(f"{k} {v}" for k, v in usage.items() if v) or "no requests"))
    print(f"  examples: {report.examples}")
    return 0


def _bound_work_dir() -> str:
    import gin

    work_dir = gin.get_bindings("run_pipeline").get("work_dir")
    if not work_dir:
        raise CommandError("say where the run goes: --work_dir or run_pipeline.work_dir")
    return str(work_dir)


def _write(args) -> int:
    from codeio_jax.data.pipeline import PipelineError, write_examples

    if not args.inp.exists():
        raise CommandError(f"{args.inp} does not exist")
    try:
        written = write_examples(args.inp, args.out_dir, args.shards)
    except (PipelineError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    again = " (already written)" if written.summary.already_done else ""
    print(f"write: {written.summary.items} examples into {len(written.files)} shards in {args.out_dir}{again}")
    return 0


def _prompts(args) -> int:
    from codeio_jax.data import stages

    errors = errors_path(args)
    if args.per_task < 0:
        raise CommandError(f"--per-task must be 0 or more, got {args.per_task}")
    with Progress(rows_in(args.inp), "records") as bar:
        summary = stages.prompts_file(args.inp, args.out, errors, seed=args.seed, per_task=args.per_task,
                                      on_result=bar.result)
    print_stage("prompts", summary, args.out, errors)
    return 0


def _respond(args) -> int:
    from codeio_jax.data import stages

    errors = errors_path(args)
    if args.turn < 1:
        raise CommandError(f"--turn must be 1 or more, got {args.turn}")
    spec = _teacher_spec(args)
    with sandbox_for(args) as sandbox, spec.build(sandbox, args.out.parent / "teacher_cache") as responder, \
            Progress(rows_in(args.inp), "rows") as bar:
        summary = stages.respond_file(args.inp, args.out, errors, responder, args.turn, repr(spec),
                                      on_result=bar.result)
    print_stage(f"respond (turn {args.turn})", summary, args.out, errors)
    print("  teacher: " + (", ".join(f"{k} {v}" for k, v in responder.usage.as_dict().items() if v)
                           or "no requests"))
    return 0


def _transform(args) -> int:
    from codeio_jax.data import stages

    errors = errors_path(args)
    spec = _teacher_spec(args)
    responder = spec.build(None, args.out.parent / "teacher_cache")
    with responder, Progress(rows_in(args.inp), "files") as bar:
        summary = stages.transform_file(args.inp, args.out, errors, responder.teacher, repr(spec),
                                        on_result=bar.result)
    print_stage("transform", summary, args.out, errors)
    return 0


def _assemble(args) -> int:
    from codeio_jax.data import stages

    errors = errors_path(args)
    summary = stages.assemble_file(args.inp, args.out, errors)
    print_stage("assemble", summary, args.out, errors)
    return 0


def _import(args) -> int:
    from codeio_jax.data import stages

    errors = errors_path(args)
    summary = stages.import_file(args.inp, args.out, errors)
    print_stage("import", summary, args.out, errors)
    return 0
