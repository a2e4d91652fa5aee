"""The `codeio-jax` command: flags in, library calls out, results printed.

Every subcommand imports what it needs when it runs, so `codeio-jax score`
never pays for TensorFlow or JAX.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CommandError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
                     help="error records (JSONL); default: <out>.errors.jsonl")
    ios.add_argument("--seed", type=int, default=0)
    ios.add_argument("--max-calls", type=int, default=1000)
    ios.add_argument("--max-pairs", type=int, default=10)
    ios.add_argument("--timeout", type=float, default=20.0, help="seconds per record")
    _sandbox_flags(ios)
    ios.set_defaults(handler=_ios)

    verify = sub.add_parser("verify", help="verify predictions (JSONL of replies) by execution")
    verify.add_argument("--in", dest="inp", required=True, type=Path,
                        help="rows with task, response, output, and refcode/funcname for input prediction")
    verify.add_argument("--out", required=True, type=Path)
    verify.add_argument("--reveal-expected", action="store_true",
                        help="say where a wrong output prediction differs from the recorded output")
    _sandbox_flags(verify)
    verify.set_defaults(handler=_verify)

    check = sub.add_parser("sandbox-check", help="show which sandbox protections this machine grants")
    check.add_argument("--hostile", action="store_true",
                       help="also run the hostile corpus and check that every program is contained")
    _sandbox_flags(check)
    check.set_defaults(handler=_sandbox_check)
    return parser


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
    errors_path = args.errors or args.out.with_name(args.out.name + ".errors.jsonl")
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

    def __init__(self, total, unit):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(),
                        leave=False)
        self.counts: dict[str, int] = {}

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
