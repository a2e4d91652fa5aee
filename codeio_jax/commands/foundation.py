"""Commands of the foundation: score benchmark answers, make I/O pairs, verify replies, check the sandbox.

Each handler imports what it needs when it runs.
"""

from __future__ import annotations

import contextlib

import json
import sys
from pathlib import Path

from codeio_jax.commands.common import (CommandError, Progress, count, errors_path, format_counts, print_stage,
                                        read_json, rows_in, sandbox_flags, sandbox_for, write_json)


def add_commands(sub) -> None:
    score = sub.add_parser("score", help="score benchmark generations by executing them")
    score.add_argument("--benchmark", required=True, choices=["cruxeval"])
    score.add_argument("--mode", required=True, choices=["input", "output"])
    score.add_argument("--generations", required=True, type=Path,
                       help='JSON object {"sample_N": [generation, ...]}')
    score.add_argument("--out", required=True, type=Path, help="where to write the scored JSON")
    score.add_argument("--data", type=Path, default=None, help="the benchmark's JSONL (default: ../shared/data)")
    score.add_argument("--timeout", type=float, default=3.0, help="seconds per check (CRUXEval: 3)")
    sandbox_flags(score)
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
    ios.add_argument("--no-determinism", dest="determinism", action="store_false",
                     help="keep pairs without rerunning them in another world (another seed, hash seed, "
                          "clock; each input alone and in another order)")
    ios.add_argument("--deterministic-min-pairs", type=int, default=2,
                     help="pairs that must hold for a record with a pair that changed (default 2)")
    sandbox_flags(ios)
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
    sandbox_flags(verify)
    verify.set_defaults(handler=_verify)

    check = sub.add_parser("sandbox-check", help="show which sandbox protections this machine grants")
    check.add_argument("--hostile", action="store_true",
                       help="also run the hostile corpus and check that every program is contained")
    sandbox_flags(check)
    check.set_defaults(handler=_sandbox_check)


def _score(args) -> int:
    from codeio_jax.verify import cruxeval

    try:
        samples = cruxeval.load_samples(args.data or cruxeval.DEFAULT_DATA)
        generations = read_json(args.generations)
        cruxeval.validate_generations(generations, samples)
    except cruxeval.ScoringError as exc:
        raise CommandError(str(exc)) from None
    total = sum(len(g) for g in generations.values())
    with sandbox_for(args, timeout=args.timeout) as sandbox, Progress(total, "checks") as bar:
        report = cruxeval.score(generations, args.mode, samples, sandbox, timeout_s=args.timeout,
                                batch=not args.no_batch, on_progress=_first_check_stamp(bar.count))
    write_json(args.out, report.to_dict())
    counts = count(s for statuses in report.statuses.values() for s in statuses)
    print(f"cruxeval {args.mode}: {len(generations)} samples, {total} generations")
    print(f"  statuses: {format_counts(counts)}")
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
    try:
        settings = ios_stage.IOSettings(seed=args.seed, max_calls=args.max_calls, max_pairs=args.max_pairs,
                                        timeout_s=args.timeout, determinism=args.determinism,
                                        deterministic_min_pairs=args.deterministic_min_pairs)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    with sandbox_for(args) as sandbox, sandbox_for(args, recheck=True) if args.determinism else \
            contextlib.nullcontext() as recheck, Progress(rows_in(source), "records") as bar:
        summary = ios_stage.run_file(source, args.out, errors_path, sandbox, settings,
                                     on_record=lambda status: bar.count(status, 1), recheck=recheck)
    print(f"ios: {summary.records} records in, {summary.kept} with pairs, "
          f"{summary.errors} errors, {summary.pairs} pairs")
    if summary.error_reasons:
        print(f"  errors by reason: {format_counts(summary.error_reasons)}")
    print(f"  wrote {args.out} and {errors_path}")
    return 0


def _verify(args) -> int:
    from codeio_jax.verify import stage

    if not args.inp.exists():
        raise CommandError(f"{args.inp} does not exist")
    if _holds_prediction_rows(args.inp):
        from codeio_jax.data import stages

        errors = errors_path(args)
        with sandbox_for(args) as sandbox, Progress(rows_in(args.inp), "rows") as bar:
            summary = stages.verify_file(args.inp, args.out, errors, sandbox,
                                         reveal_expected=args.reveal_expected, on_result=bar.result)
        print_stage("verify", summary, args.out, errors)
        return 0
    with sandbox_for(args) as sandbox:
        counts = stage.verify_file(args.inp, args.out, sandbox, reveal_expected=args.reveal_expected)
    print(f"verify: {sum(counts.values())} rows: {format_counts(counts)}")
    print(f"  wrote {args.out}")
    return 0


def _sandbox_check(args) -> int:
    from codeio_jax.execution.probe import probe

    with sandbox_for(args) as sandbox:
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
