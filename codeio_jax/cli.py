"""The `codeio-jax` command: flags in, library calls out, results printed.

Every subcommand imports what it needs when it runs, so `codeio-jax score`
never pays for TensorFlow or JAX.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


class CommandError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # T5X-style `--gin.NAME=VALUE` bindings: only commands that take gin accept them.
    args.gin_bindings = [flag[len("--gin."):] for flag in unknown if flag.startswith("--gin.")]
    rest = [flag for flag in unknown if not flag.startswith("--gin.")]
    if rest or (args.gin_bindings and not getattr(args, "accepts_gin", False)):
        parser.error(f"unrecognized arguments: {' '.join(rest or unknown)}")
    try:
        return args.handler(args)
    except CommandError as exc:
        print(f"codeio-jax {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codeio-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score benchmark generations by executing them")
    score.add_argument("--benchmark", required=True, choices=["cruxeval"])
    score.add_argument("--mode", required=True, choices=["input", "output"])
    score.add_argument("--generations", required=True, type=Path,
                       help='JSON object {"sample_N": [generation, ...]}')
    score.add_argument("--out", required=True, type=Path, help="where to write the scored JSON")
    score.add_argument("--data", type=Path, default=None, help="the benchmark's JSONL (default: ../shared/data)")
    score.add_argument("--timeout", type=float, default=3.0, help="seconds per check (CRUXEval: 3)")
    _sandbox_flags(score)
    score.add_argument("--no-batch", action="store_true",
                       help="give every check its own child, even checks that run no generated code")
    score.set_defaults(handler=_score)

    ios = sub.add_parser("ios", help="generate input/output pairs for unified records")
    ios.add_argument("--in", dest="inp", type=Path, default=None,
                     help="unified records (JSONL); default: the embedded corpus")
    ios.add_argument("--out", required=True, type=Path, help="records with pairs (JSONL)")
    ios.add_argument("--errors", type=Path, default=None,
                     help="error records (JSONL); default: <out stem>.errors.jsonl")
    ios.add_argument("--seed", type=int, default=0)
    ios.add_argument("--max-calls", type=int, default=1000)
    ios.add_argument("--max-pairs", type=int, default=10)
    ios.add_argument("--timeout", type=float, default=20.0, help="seconds per record")
    _sandbox_flags(ios)
    ios.set_defaults(handler=_ios)

    verify = sub.add_parser("verify", help="verify predictions (JSONL of replies) by execution")
    verify.add_argument("--in", dest="inp", required=True, type=Path,
                        help="prediction rows of the pipeline (the `respond` stage's output), or rows "
                             "with task, response, output, and refcode/funcname for input prediction")
    verify.add_argument("--out", required=True, type=Path)
    verify.add_argument("--errors", type=Path, default=None,
                        help="pipeline rows only: error rows (default: <out stem>.errors.jsonl)")
    verify.add_argument("--reveal-expected", action="store_true",
                        help="say where a wrong output prediction differs from the recorded output")
    _sandbox_flags(verify)
    verify.set_defaults(handler=_verify)

    pipeline = sub.add_parser(
        "pipeline", help="run every data stage (gin-configured), raw code or unified records to examples",
        description="Run every stage over a work folder. T5X-style gin flags: --gin_file (repeatable), "
                    "--gin_search_paths, --gin.NAME=VALUE (e.g. --gin.run_pipeline.rounds=0).")
    _gin_flags(pipeline, "gin/data/*.gin")
    pipeline.add_argument("--work_dir", type=Path, default=None, help="binds run_pipeline.work_dir")
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
    _io_flags(prompts)
    prompts.add_argument("--seed", type=int, default=0)
    prompts.add_argument("--per-task", type=int, default=3, help="prompts per task and record")
    prompts.set_defaults(handler=_prompts)

    respond = sub.add_parser("respond", help="a teacher answers one turn of prediction rows")
    _io_flags(respond)
    respond.add_argument("--turn", type=int, default=1, help="1 answers the prompt; 2+ revise a wrong answer")
    _teacher_flags(respond, default="trace")
    _sandbox_flags(respond)
    respond.set_defaults(handler=_respond)

    transform = sub.add_parser("transform", help="raw code rows into unified records, by a chat teacher")
    _io_flags(transform)
    _teacher_flags(transform, default=None)
    transform.set_defaults(handler=_transform)

    assemble = sub.add_parser("assemble", help="verified prediction rows into examples (the released shape)")
    _io_flags(assemble)
    assemble.set_defaults(handler=_assemble)

    imported = sub.add_parser("import", help="rows of the released CodeIO-PyEdu-Reasoning shape, as examples")
    _io_flags(imported)
    imported.set_defaults(handler=_import)

    train = sub.add_parser(
        "train", help="train a model (gin-configured: gin/train/*.gin)",
        description="T5X-style: --gin_file (repeatable), --gin_search_paths, --gin.NAME=VALUE, e.g. "
                    "--gin.MODEL_DIR=\"'runs/x'\" --gin.train.steps=100.")
    _gin_flags(train, "gin/train/*.gin, gin/models/*.gin")
    train.set_defaults(handler=_train)

    evaluate = sub.add_parser(
        "eval", help="evaluate a model on SeqIO eval tasks by generation (gin: gin/eval/*.gin)",
        description="T5X-style gin flags, e.g. --gin_file eval/cruxeval.gin --gin.CHECKPOINT=\"'runs/x'\"")
    _gin_flags(evaluate, "gin/eval/*.gin")
    evaluate.set_defaults(handler=_eval)

    convert = sub.add_parser("convert", help="models between Hugging Face folders and codeio-jax checkpoints")
    convert.add_argument("direction", choices=["hf-to-jax", "jax-to-hf"])
    convert.add_argument("--in", dest="inp", required=True, type=Path,
                         help="a Hugging Face folder (config.json + safetensors) or a codeio-jax checkpoint")
    convert.add_argument("--out", required=True, type=Path, help="the folder to write (must not hold a model)")
    convert.add_argument("--dtype", default=None, help="parameter dtype, e.g. bfloat16 (default: as stored)")
    convert.add_argument("--max-shard-gb", type=float, default=5.0, help="jax-to-hf: safetensors shard size")
    convert.set_defaults(handler=_convert)

    serve = sub.add_parser("serve", help="an OpenAI-compatible chat server for a Hugging Face model folder")
    serve.add_argument("--model", required=True, type=Path, help="config.json, safetensors and tokenizer.json")
    serve.add_argument("--family", default=None, choices=["qwen2", "llama3", "gemma2", "deepseek_v2"],
                       help="the chat template (default: the model's family's)")
    serve.add_argument("--name", default=None, help="the model name clients send (default: the folder's name)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch", type=int, default=8, help="requests generated together at most")
    serve.add_argument("--max-length", type=int, default=None,
                       help="prompt + reply tokens at most (default: the model's max_position_embeddings)")
    serve.set_defaults(handler=_serve)

    check = sub.add_parser("sandbox-check", help="show which sandbox protections this machine grants")
    check.add_argument("--hostile", action="store_true",
                       help="also run the hostile corpus and check that every program is contained")
    _sandbox_flags(check)
    check.set_defaults(handler=_sandbox_check)
    return parser


def _gin_flags(parser: argparse.ArgumentParser, recipes: str) -> None:
    parser.add_argument("--gin_file", action="append", default=[], help=f"a recipe ({recipes}); repeatable")
    parser.add_argument("--gin_search_paths", default="", help="comma-separated folders to find gin files in")
    parser.set_defaults(accepts_gin=True)


def _parse_gin(args, extra_bindings=(), register_training: bool = False) -> None:
    """The command's gin files and --gin.NAME=VALUE bindings; a name gin does not know fails here."""
    from codeio_jax.gin_flags import GinFlagError, parse_gin

    if register_training:
        from codeio_jax.training import configurables

        configurables.register_all()
    try:
        parse_gin(args.gin_file, args.gin_search_paths, [*args.gin_bindings, *extra_bindings])
    except GinFlagError as exc:
        raise CommandError(str(exc)) from None


def _io_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="inp", required=True, type=Path, help="input rows (JSONL)")
    parser.add_argument("--out", required=True, type=Path, help="output rows (JSONL)")
    parser.add_argument("--errors", type=Path, default=None,
                        help="error rows (JSONL); default: <out stem>.errors.jsonl")


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


def _errors_path(args) -> Path:
    if not args.inp.exists():
        raise CommandError(f"{args.inp} does not exist")
    return args.errors or args.out.with_name(args.out.stem + ".errors.jsonl")


def _print_stage(name: str, summary, out: Path, errors: Path) -> None:
    again = " (already done: nothing to do)" if summary.already_done else ""
    resumed = f", resumed after {summary.resumed_at}" if summary.resumed_at else ""
    print(f"{name}: {summary.items} in, {summary.ok} rows out, {summary.errors} errors{resumed}{again}")
    print(f"  wrote {out} and {errors}")


def _pipeline(args) -> int:
    from codeio_jax.data import pipeline

    _parse_gin(args, [f"run_pipeline.work_dir = {str(args.work_dir)!r}"] if args.work_dir else [])
    work_dir = args.work_dir or _bound_work_dir()
    if args.engine == "beam":
        from codeio_jax.data import beam_pipeline

        try:
            found = beam_pipeline.run_configured(work_dir, args.beam_args)
        except pipeline.PipelineError as exc:
            raise CommandError(str(exc)) from None
        print(f"pipeline on Beam: {found['records']} records, {found['examples']} examples, "
              f"{found['errors']} error rows, {len(found['shards'])} shards in {work_dir}")
        return 0
    if args.beam_args:
        raise CommandError(f"unrecognized arguments: {' '.join(args.beam_args)} (Beam flags need --engine beam)")
    bars: dict[str, _Progress] = {}

    def progress(stage):
        bars[stage] = _Progress(None, "rows", desc=stage)
        return lambda result: bars[stage].count("ok" if result.ok else "error", 1)

    try:
        report = pipeline.run_pipeline(progress=progress)
    except pipeline.PipelineError as exc:
        raise CommandError(str(exc)) from None
    finally:
        for bar in bars.values():
            bar.bar.close()
    total = sum(stage.seconds for stage in report.stages) or 1.0
    print(f"pipeline: {report.work_dir}")
    for stage in report.stages:
        summary = stage.summary
        note = " (already done)" if summary.already_done else ""
        print(f"  {stage.name:<10} {summary.items:>6} in {summary.ok:>6} out {summary.errors:>5} errors"
              f" {stage.seconds:>7.2f} s {100 * stage.seconds / total:>5.1f}%{note}")
    for turn, usage in report.teacher_usage.items():
        print(f"  teacher {turn}: " + (", ".join(f"{k} {v}" for k, v in usage.items() if v) or "no requests"))
    print(f"  examples: {report.examples}")
    return 0


def _bound_work_dir() -> Path:
    import gin

    work_dir = gin.get_bindings("run_pipeline").get("work_dir")
    if not work_dir:
        raise CommandError("say where the run goes: --work_dir or run_pipeline.work_dir")
    return Path(work_dir)


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

    errors = _errors_path(args)
    if args.per_task < 0:
        raise CommandError(f"--per-task must be 0 or more, got {args.per_task}")
    with _Progress(None, "records") as bar:
        summary = stages.prompts_file(args.inp, args.out, errors, seed=args.seed, per_task=args.per_task,
                                      on_result=bar.result)
    _print_stage("prompts", summary, args.out, errors)
    return 0


def _respond(args) -> int:
    from codeio_jax.data import stages

    errors = _errors_path(args)
    if args.turn < 1:
        raise CommandError(f"--turn must be 1 or more, got {args.turn}")
    spec = _teacher_spec(args)
    with _sandbox(args) as sandbox, spec.build(sandbox, args.out.parent / "teacher_cache") as responder, \
            _Progress(None, "rows") as bar:
        summary = stages.respond_file(args.inp, args.out, errors, responder, args.turn, repr(spec),
                                      on_result=bar.result)
    _print_stage(f"respond (turn {args.turn})", summary, args.out, errors)
    print("  teacher: " + (", ".join(f"{k} {v}" for k, v in responder.usage.as_dict().items() if v)
                           or "no requests"))
    return 0


def _transform(args) -> int:
    from codeio_jax.data import stages

    errors = _errors_path(args)
    spec = _teacher_spec(args)
    responder = spec.build(None, args.out.parent / "teacher_cache")
    with responder, _Progress(None, "files") as bar:
        summary = stages.transform_file(args.inp, args.out, errors, responder.teacher, repr(spec),
                                        on_result=bar.result)
    _print_stage("transform", summary, args.out, errors)
    return 0


def _assemble(args) -> int:
    from codeio_jax.data import stages

    errors = _errors_path(args)
    summary = stages.assemble_file(args.inp, args.out, errors)
    _print_stage("assemble", summary, args.out, errors)
    return 0


def _import(args) -> int:
    from codeio_jax.data import stages

    errors = _errors_path(args)
    summary = stages.import_file(args.inp, args.out, errors)
    _print_stage("import", summary, args.out, errors)
    return 0


def _train(args) -> int:
    from codeio_jax.training import partitioning

    partitioning.initialize_distributed()
    _parse_gin(args, register_training=True)
    from codeio_jax.training.trainer import train

    def progress(row):
        parts = [f"step {row['step']}", f"loss {row['loss']:.4f}", f"lr {row['learning_rate']:.2e}",
                 f"grad_norm {row['grad_norm']:.3f}", f"{row['tokens_per_s']:,.0f} tokens/s"]
        if "mfu" in row:
            parts.append(f"MFU {100 * row['mfu']:.1f}%")
        parts += [f"{k} {v:.2f}" for k, v in row.items() if k.startswith("eval/")]
        print("  ".join(parts), flush=True)

    try:
        report = train(on_log=progress)
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    resumed = f" (resumed at step {report.start_step})" if report.start_step else ""
    print(f"train: steps {report.start_step}..{report.end_step}{resumed}; model_dir {report.model_dir}")
    return 0


def _eval(args) -> int:
    _parse_gin(args, register_training=True)
    from codeio_jax.training.evaluation import evaluate

    try:
        scores = evaluate()
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    for name, value in scores.items():
        print(f"{name}: {value:.2f}")
    return 0


def _convert(args) -> int:
    from codeio_jax.models import checkpoint, convert

    if not args.inp.exists():
        raise CommandError(f"{args.inp} does not exist")
    try:
        if args.direction == "hf-to-jax":
            config, params = convert.load_hf(args.inp, dtype=args.dtype)
            checkpoint.save(args.out, config, params)
        else:
            config, params = checkpoint.load(args.inp)
            convert.save_hf(args.out, config, params, dtype=args.dtype,
                            max_shard_bytes=int(args.max_shard_gb * (1 << 30)))
    except (convert.CheckpointError, FileNotFoundError, FileExistsError, TypeError) as exc:
        raise CommandError(str(exc)) from None
    count = sum(x.size for x in __import__("jax").tree_util.tree_leaves(params))
    print(f"convert {args.direction}: {config.family}, {config.num_layers} layers, {count:,} parameters -> {args.out}")
    return 0


def _serve(args) -> int:
    from codeio_jax.models.convert import CheckpointError
    from codeio_jax.sampling.chat import ChatModel
    from codeio_jax.sampling.server import make_server

    if args.max_batch < 1:
        raise CommandError(f"--max-batch must be at least 1, got {args.max_batch}")
    try:
        chat = ChatModel.from_folder(args.model, args.family, args.max_length)
    except (CheckpointError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    name = args.name or args.model.resolve().name
    server = make_server(chat, args.host, args.port, name, args.max_batch)
    host, port = server.server_address[:2]
    print(f"serving {name} ({chat.family} template, batches of up to {args.max_batch}) on http://{host}:{port}/v1",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
        print("interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Every request is answered and the batcher joined; skip the interpreter's
        # teardown, in which native threads (XLA, tokenizers) have aborted the process.
        os._exit(130)
    server.server_close()
    return 0


def _sandbox_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None, help="parallel checks (default: one per core)")
    parser.add_argument("--python", default=None,
                        help="interpreter that runs the checked programs (default: this one)")


def _sandbox(args, timeout: float | None = None):
    from codeio_jax.execution import Limits, Sandbox, SandboxConfig, SandboxError

    fields = {}
    if args.python:
        fields["python"] = args.python
    if timeout is not None:
        fields["limits"] = Limits(timeout_s=timeout)
    try:
        return Sandbox(SandboxConfig(workers=args.workers, **fields))
    except (SandboxError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def _score(args) -> int:
    from codeio_jax.verify import cruxeval

    try:
        samples = cruxeval.load_samples(args.data or cruxeval.DEFAULT_DATA)
        generations = _read_json(args.generations)
        cruxeval.validate_generations(generations, samples)
    except cruxeval.ScoringError as exc:
        raise CommandError(str(exc)) from None
    total = sum(len(g) for g in generations.values())
    with _sandbox(args, timeout=args.timeout) as sandbox, _Progress(total, "checks") as bar:
        report = cruxeval.score(generations, args.mode, samples, sandbox, timeout_s=args.timeout,
                                batch=not args.no_batch, on_progress=_first_check_stamp(bar.count))
    _write_json(args.out, report.to_dict())
    counts = _count(s for statuses in report.statuses.values() for s in statuses)
    print(f"cruxeval {args.mode}: {len(generations)} samples, {total} generations")
    print(f"  statuses: {_format_counts(counts)}")
    print(f"  pass@1 = {report.pass_at_1:.2f}")
    print(f"  pass@5 = {report.pass_at_5:.2f}")
    print(f"  wrote {args.out}")
    return 0


def _ios(args) -> int:
    from codeio_jax.data import ios as ios_stage

    source = args.inp or ios_stage.DEFAULT_CORPUS
    if not Path(source).exists():
        raise CommandError(f"{source} does not exist")
    errors_path = args.errors or args.out.with_name(args.out.stem + ".errors.jsonl")
    settings = ios_stage.IOSettings(seed=args.seed, max_calls=args.max_calls, max_pairs=args.max_pairs,
                                    timeout_s=args.timeout)
    with _sandbox(args) as sandbox, _Progress(None, "records") as bar:
        summary = ios_stage.run_file(source, args.out, errors_path, sandbox, settings,
                                     on_record=lambda status: bar.count(status, 1))
    print(f"ios: {summary.records} records in, {summary.kept} with pairs, "
          f"{summary.errors} errors, {summary.pairs} pairs")
    if summary.error_reasons:
        print(f"  errors by reason: {_format_counts(summary.error_reasons)}")
    print(f"  wrote {args.out} and {errors_path}")
    return 0


def _verify(args) -> int:
    from codeio_jax.verify import stage

    if not args.inp.exists():
        raise CommandError(f"{args.inp} does not exist")
    if _holds_prediction_rows(args.inp):
        from codeio_jax.data import stages

        errors = _errors_path(args)
        with _sandbox(args) as sandbox, _Progress(None, "rows") as bar:
            summary = stages.verify_file(args.inp, args.out, errors, sandbox,
                                         reveal_expected=args.reveal_expected, on_result=bar.result)
        _print_stage("verify", summary, args.out, errors)
        return 0
    with _sandbox(args) as sandbox:
        counts = stage.verify_file(args.inp, args.out, sandbox, reveal_expected=args.reveal_expected)
    print(f"verify: {sum(counts.values())} rows: {_format_counts(counts)}")
    print(f"  wrote {args.out}")
    return 0


def _sandbox_check(args) -> int:
    from codeio_jax.execution.probe import probe

    with _sandbox(args) as sandbox:
        report = probe(sandbox)
        width = max(len(name) for name, _, _ in report)
        for name, active, detail in report:
            print(f"  {'on ' if active else 'OFF'}  {name:<{width}}  {detail}")
        if not args.hostile:
            return 0
        import tempfile

        from codeio_jax.execution.hostile import run_corpus

        with tempfile.TemporaryDirectory(prefix="codeio-canary-") as canary:
            results = run_corpus(sandbox, Path(canary))
    print("\nhostile corpus:")
    for result in results:
        print(f"  {'contained' if result.contained else 'ESCAPED  '}  {result.name:<36} "
              f"{result.status}  {result.detail}")
    contained = sum(r.contained for r in results)
    print(f"{contained} of {len(results)} hostile programs contained")
    return 0 if contained == len(results) else 1


def _holds_prediction_rows(path: Path) -> bool:
    """Whether the file's first JSON object is a pipeline prediction row (it has turns)."""
    with open(path, "rb") as f:
        for raw in f:
            try:
                row = json.loads(raw)
            except ValueError:
                continue
            return isinstance(row, dict) and "turns" in row
    return False


def _first_check_stamp(update):
    """With CODEIO_TRACE_FIRST_CHECK set, log the wall-clock time at which the
    first check finished (benchmarks/score_startup.py reads it)."""
    import os
    import time

    if not os.environ.get("CODEIO_TRACE_FIRST_CHECK"):
        return update
    stamped = []

    def wrapped(status, count):
        if not stamped:
            stamped.append(True)
            print(f"first check done at {time.time():.6f}", file=sys.stderr, flush=True)
        update(status, count)

    return wrapped


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CommandError(f"{path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path} is not valid JSON: {exc}") from None


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    tmp.replace(path)


def _count(items) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


class _Progress:
    """A progress bar on stderr with counts by status, tqdm imported only once
    work has started (so it never delays the first check)."""

    def __init__(self, total, unit, desc=None):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr,
                        disable=not sys.stderr.isatty(), leave=False)
        self.counts: dict[str, int] = {}

    def result(self, result) -> None:
        """Counts a driver Result (one input item)."""
        self.count("ok" if result.ok else "error", 1)

    def count(self, status: str, n: int) -> None:
        self.counts[status] = self.counts.get(status, 0) + n
        self.bar.set_postfix_str(_format_counts(self.counts), refresh=False)
        self.bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
