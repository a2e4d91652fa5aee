"""The `codeio-jax` command: flags in, library calls out, results printed.

The commands live in codeio_jax/commands/, one module per group; every
subcommand imports what it needs when it runs, so `codeio-jax score` never
pays for TensorFlow or JAX.
"""

from __future__ import annotations

import argparse
import sys

from codeio_jax.commands import data, foundation, models, rl
from codeio_jax.commands.common import CommandError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # T5X-style `--gin.NAME=VALUE` bindings: only commands that take gin accept them.
    args.gin_bindings = [flag[len("--gin."):] for flag in unknown if flag.startswith("--gin.")]
    rest = [flag for flag in unknown if not flag.startswith("--gin.")]
    if rest or (args.gin_bindings and not getattr(args, "accepts_gin", False)):
        parser.error(f"unrecognized arguments: {' '.join(rest or unknown)}")
    # Before any command starts jax (no jax import here: `score` must stay light).
    from codeio_jax.training.hardware import skip_tpu_probe_without_a_tpu

    skip_tpu_probe_without_a_tpu()
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
    for group in (foundation, data, models, rl):
        group.add_commands(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
