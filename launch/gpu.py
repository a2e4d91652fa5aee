"""Train (or evaluate) on the GPUs of one machine: the environment JAX wants, then `codeio-jax`.

    python launch/gpu.py --gpus 0,1,2,3 -- --gin_file train/stage1_codeio.gin --gin.MODEL_DIR="'runs/x'"
    python launch/gpu.py --dry_run -- --gin_file train/smoke_cpu.gin     # print the command only
    python launch/gpu.py --docker IMAGE --gpus 0,1 -- --gin_file ...     # the same inside a container

Everything after `--` goes to `codeio-jax train` (`--mode eval`: `codeio-jax eval`).
One process drives all local GPUs: JAX sees every visible GPU as a device of one
process and the mesh spans them, so there is no torchrun and no process per GPU
(several GPU machines are a multi-process job: jax.distributed, not this script).

The environment, each documented by JAX or NVIDIA's JAX-Toolbox:
  CUDA_VISIBLE_DEVICES            --gpus: which GPUs this run may use (default: all)
  XLA_PYTHON_CLIENT_MEM_FRACTION  share of each GPU's memory JAX preallocates; JAX's default
                                  0.75 leaves a quarter idle, 0.9 keeps room for cuBLAS/NCCL
  XLA_FLAGS                       --xla_gpu_enable_latency_hiding_scheduler=true lets XLA
                                  overlap collectives (all-reduce, all-gather) with compute;
                                  flags already in your XLA_FLAGS and --xla_flag come after it
  NCCL_DEBUG                      WARN: NCCL says when it falls back to a slower transport
                                  (INFO to debug topology; unknown XLA flags abort at start)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the `launch` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from launch.shell import Command, LaunchError, execute, render, split_passthrough  # noqa: E402

DEFAULT_XLA_FLAGS = ("--xla_gpu_enable_latency_hiding_scheduler=true",)
NCCL_LEVELS = ("VERSION", "WARN", "INFO", "TRACE")


def parse_gpus(text: str | None) -> list[int] | None:
    """'0,1,2,3' -> [0, 1, 2, 3]; None or 'all' -> None (every GPU)."""
    if text is None or text == "all":
        return None
    try:
        gpus = [int(part) for part in text.split(",")]
    except ValueError:
        raise LaunchError(f"--gpus {text!r}: comma-separated GPU indices, e.g. 0,1,2,3") from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise LaunchError(f"--gpus {text!r}: indices must be distinct and not negative")
    return gpus


def jax_env(mem_fraction: float = 0.9, xla_flags: Sequence[str] = (), inherited_xla_flags: str = "",
            nccl_debug: str = "WARN", extra: Sequence[str] = (), default_xla_flags: bool = True) -> dict[str, str]:
    """XLA and NCCL settings for one process on several GPUs (see the module docstring)."""
    if not 0.0 < mem_fraction <= 1.0:
        raise LaunchError(f"--mem_fraction {mem_fraction}: a fraction in (0, 1]")
    if nccl_debug not in NCCL_LEVELS:
        raise LaunchError(f"--nccl_debug {nccl_debug!r}: one of {', '.join(NCCL_LEVELS)}")
    flags = [*(DEFAULT_XLA_FLAGS if default_xla_flags else ()), *inherited_xla_flags.split(), *xla_flags]
    env = {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{mem_fraction:g}", "NCCL_DEBUG": nccl_debug}
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    for item in extra:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise LaunchError(f"--env {item!r}: expected NAME=VALUE")
        env[name] = value
    return env


def local_command(env: dict[str, str], gpus: list[int] | None, mode: str, args: Sequence[str],
                  program: str = "codeio-jax") -> Command:
    """`env K=V ... codeio-jax MODE ARGS`: the exact argv that runs, printable as is."""
    visible = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))} if gpus is not None else {}
    return ["env", *(f"{k}={v}" for k, v in {**visible, **env}.items()), program, mode, *args]


def docker_command(env: dict[str, str], gpus: list[int] | None, mode: str, args: Sequence[str],
                   image: str, workdir: str) -> Command:
    """The same run in IMAGE (which must have codeio-jax installed). The working folder is
    mounted at its own path, so relative gin files and local MODEL_DIRs mean the same."""
    # docker splits --gpus on commas unless the device list is in double quotes.
    devices = "all" if gpus is None else '"device=' + ",".join(map(str, gpus)) + '"'
    env_flags = [flag for k, v in env.items() for flag in ("-e", f"{k}={v}")]
    # --ipc=host: NCCL needs more shared memory than docker's 64 MB default (NVIDIA's advice).
    return ["docker", "run", "--rm", "--gpus", devices, "--ipc=host", *env_flags,
            "-v", f"{workdir}:{workdir}", "-w", workdir, image, "codeio-jax", mode, *args]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--gpus", help="GPU indices, e.g. 0,1,2,3 (default: all)")
    parser.add_argument("--mode", choices=["train", "eval"], default="train", help="the codeio-jax subcommand")
    parser.add_argument("--mem_fraction", type=float, default=0.9, help="XLA_PYTHON_CLIENT_MEM_FRACTION")
    parser.add_argument("--xla_flag", action="append", default=[], help="another XLA flag (repeatable)")
    parser.add_argument("--no_default_xla_flags", action="store_true",
                        help="leave out --xla_gpu_enable_latency_hiding_scheduler=true")
    parser.add_argument("--nccl_debug", default="WARN", choices=NCCL_LEVELS)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="more environment")
    parser.add_argument("--docker", metavar="IMAGE", help="run inside this image (docker run --gpus)")
    parser.add_argument("--dry_run", action="store_true", help="print the command, run nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    own, passthrough = split_passthrough(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    try:
        env = jax_env(args.mem_fraction, args.xla_flag, os.environ.get("XLA_FLAGS", ""), args.nccl_debug,
                      args.env, default_xla_flags=not args.no_default_xla_flags)
        gpus = parse_gpus(args.gpus)
        if args.docker:
            command = docker_command(env, gpus, args.mode, passthrough, args.docker, os.getcwd())
        else:
            command = local_command(env, gpus, args.mode, passthrough)
        runner = "docker" if args.docker else "codeio-jax"
        if not args.dry_run and shutil.which(runner) is None:
            raise LaunchError(f"{runner} is not on PATH" + ("" if args.docker else
                              ": activate the venv (source .venv/bin/activate) or pip install -e ."))
        execute([command], args.dry_run)
    except LaunchError as exc:
        print(f"gpu.py: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"gpu.py: error: `{render(exc.cmd)}` exited with {exc.returncode}", file=sys.stderr)
        return exc.returncode or 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
