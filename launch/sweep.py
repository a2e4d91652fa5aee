"""Expand a gin sweep (a JSON file) into named runs, each with its own MODEL_DIR.

    python launch/sweep.py gin/sweeps/lr_sweep_example.json --root runs/lr     # print the commands
    python launch/sweep.py SWEEP.json --run                                    # run them in turn, here
    python launch/sweep.py SWEEP.json --launcher gpu -- --gpus 0,1,2,3         # via launch/gpu.py
    python launch/sweep.py SWEEP.json --launcher tpu_vm -- --name my-tpu       # via launch/tpu_vm.py run

The sweep file (gin/sweeps/*.json), one JSON object:

    "base":         gin files, in order (required), found as --gin_file finds them
    "grid":         {"BINDING": [value, ...], ...} (required): one run per combination
    "bindings":     {"BINDING": value, ...}: the same for every run, applied before the grid's
    "name":         run-name template, e.g. "lr{OptimizerConfig.learning_rate}" (each {BINDING}
                    is a grid key); default: every grid key as short=value, comma-separated
    "root":         where the runs' MODEL_DIRs go, ROOT/NAME (--root overrides)
    "search_paths": folders for --gin_search_paths
    "model_dir_macro": the binding set to each run's folder (default: the macro MODEL_DIR)
    "description":  free text

A BINDING is what --gin.BINDING=VALUE takes (`scope/Configurable.param`, or a MACRO). A value
is JSON: numbers, true/false and null become gin's 3e-05, True/False and None; lists and
objects nest; a string is gin text as written, so "@qwen2_5_coder_7b()" is a reference and
"'cosine'" (inner quotes) a Python string. Arguments after `--` go to the launcher.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

LAUNCH = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script: make the `launch` package importable
    sys.path.insert(0, str(LAUNCH.parent))
from launch.shell import Command, LaunchError, render, split_passthrough  # noqa: E402

KEYS = ("base", "grid", "bindings", "name", "root", "search_paths", "model_dir_macro", "description")
BINDING = re.compile(r"(?:[A-Za-z_]\w*/)*[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclasses.dataclass(frozen=True)
class Sweep:
    base: list[str]
    grid: dict[str, list[str]]  # binding -> gin texts
    bindings: dict[str, str] = dataclasses.field(default_factory=dict)
    name: str | None = None
    root: str | None = None
    search_paths: list[str] = dataclasses.field(default_factory=list)
    model_dir_macro: str = "MODEL_DIR"


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    bindings: list[tuple[str, str]]  # fixed, then this run's grid values, then the model dir
    model_dir: str


def gin_text(value: Any) -> str:
    """A JSON value as gin writes it; strings are gin text already."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(gin_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {gin_text(v)}" for k, v in value.items()) + "}"
    raise LaunchError(f"cannot write {value!r} as gin")


def parse_sweep(data: Any, source: str = "sweep") -> Sweep:
    """Check a decoded sweep file; every error names the key to fix."""
    if not isinstance(data, dict):
        raise LaunchError(f"{source}: a sweep is a JSON object with keys {', '.join(KEYS)}")
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        raise LaunchError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(KEYS)}")
    base, grid, fixed = data.get("base"), data.get("grid"), data.get("bindings", {})
    if not isinstance(base, list) or not base or not all(isinstance(f, str) and f for f in base):
        raise LaunchError(f'{source}: "base" must be a non-empty list of gin files')
    if not isinstance(grid, dict) or not grid:
        raise LaunchError(f'{source}: "grid" must map at least one binding to a list of values')
    if not isinstance(fixed, dict):
        raise LaunchError(f'{source}: "bindings" must map bindings to values')
    macro = data.get("model_dir_macro", "MODEL_DIR")
    for key in [*fixed, *grid, macro]:
        if not isinstance(key, str) or not BINDING.fullmatch(key):
            raise LaunchError(f"{source}: {key!r} is not a gin binding name (scope/Configurable.param or MACRO)")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise LaunchError(f'{source}: grid "{key}" must be a non-empty list of values')
    for key in grid:
        if key in fixed:
            raise LaunchError(f'{source}: "{key}" is in both "grid" and "bindings"')
    if macro in grid or macro in fixed:
        raise LaunchError(f'{source}: "{macro}" is set per run (ROOT/NAME); leave it out of grid and bindings')
    name = data.get("name")
    if name is not None:
        if not isinstance(name, str) or not name:
            raise LaunchError(f'{source}: "name" must be a non-empty template string')
        missing = [p for p in PLACEHOLDER.findall(name) if p not in grid]
        if missing:
            raise LaunchError(f'{source}: "name" refers to {", ".join(map(repr, missing))}, not grid keys '
                              f'({", ".join(grid)})')
    for key in ("root", "description"):
        if key in data and not isinstance(data[key], str):
            raise LaunchError(f'{source}: "{key}" must be a string')
    paths = data.get("search_paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and "," not in p for p in paths):
        raise LaunchError(f'{source}: "search_paths" must be a list of folders (without commas)')
    return Sweep(base=base, grid={k: [gin_text(v) for v in vs] for k, vs in grid.items()},
                 bindings={k: gin_text(v) for k, v in fixed.items()}, name=name, root=data.get("root"),
                 search_paths=paths, model_dir_macro=macro)


def load_sweep(path: Path) -> Sweep:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LaunchError(f"{path}: not JSON: {exc}") from None
    return parse_sweep(data, str(path))


def slug(text: str) -> str:
    """A gin value as part of a folder name: @qwen2_5_coder_7b() -> qwen2_5_coder_7b, 'a b' -> a_b."""
    text = text.replace("()", "").strip("@%")
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "_"


def run_name(sweep: Sweep, values: dict[str, str]) -> str:
    if sweep.name is None:
        text = ",".join(f"{key.rsplit('.', 1)[-1].rsplit('/', 1)[-1].lower()}={slug(v)}" for key, v in values.items())
    else:
        text = PLACEHOLDER.sub(lambda m: slug(values[m.group(1)]), sweep.name)
    # Keep it one folder name, safe in gs:// paths, file names and TensorBoard.
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text)


def expand(sweep: Sweep, root: str | None = None) -> list[Run]:
    """The cartesian product of the grid, in file order; names unique or an error."""
    root = root or sweep.root
    if not root:
        raise LaunchError('no root for the runs\' MODEL_DIRs: give --root or "root" in the sweep file')
    runs: list[Run] = []
    seen: dict[str, dict[str, str]] = {}
    for combo in itertools.product(*sweep.grid.values()):
        values = dict(zip(sweep.grid, combo))
        name = run_name(sweep, values)
        if name in seen:
            raise LaunchError(f"two runs are both named {name!r}: {seen[name]} and {values}; "
                              f'put the keys that differ into "name" (or drop repeated values)')
        seen[name] = values
        model_dir = f"{root.rstrip('/')}/{name}"
        bindings = [*sweep.bindings.items(), *values.items(), (sweep.model_dir_macro, repr(model_dir))]
        runs.append(Run(name, bindings, model_dir))
    return runs


def codeio_args(sweep: Sweep, run: Run) -> list[str]:
    """The flags of `codeio-jax train` for one run."""
    files = [arg for f in sweep.base for arg in ("--gin_file", f)]
    paths = ["--gin_search_paths", ",".join(sweep.search_paths)] if sweep.search_paths else []
    return [*files, *paths, *(f"--gin.{key}={value}" for key, value in run.bindings)]


def run_command(sweep: Sweep, run: Run, launcher: str = "local", mode: str = "train",
                launcher_args: Sequence[str] = (), python: str = sys.executable,
                launch_dir: str = str(LAUNCH)) -> Command:
    args = codeio_args(sweep, run)
    modes = ["--mode", mode] if mode != "train" else []
    if launcher == "local":
        if launcher_args:
            raise LaunchError("arguments after -- are for a launcher: add --launcher gpu or tpu_vm")
        return ["codeio-jax", mode, *args]
    if launcher == "gpu":
        return [python, f"{launch_dir}/gpu.py", *launcher_args, *modes, "--", *args]
    if launcher == "tpu_vm":
        return [python, f"{launch_dir}/tpu_vm.py", "run", *launcher_args, *modes, "--log_name", run.name,
                "--", *args]
    raise LaunchError(f"unknown launcher {launcher!r}: local, gpu or tpu_vm")


def _shown(path: str) -> str:
    """A path relative to the working folder when it is inside it: shorter to read."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def main(argv: Sequence[str] | None = None) -> int:
    own, launcher_args = split_passthrough(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("sweep", type=Path, help="the sweep file (JSON)")
    parser.add_argument("--root", help="MODEL_DIR root (default: the file's \"root\")")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--print", action="store_true", help="print each run's command (the default)")
    action.add_argument("--run", action="store_true", help="run them one after another, here")
    parser.add_argument("--launcher", choices=["local", "gpu", "tpu_vm"], default="local")
    parser.add_argument("--mode", choices=["train", "eval"], default="train")
    args = parser.parse_args(own)
    try:
        sweep = load_sweep(args.sweep)
        runs = expand(sweep, args.root)
        if args.run and args.launcher == "tpu_vm":
            raise LaunchError("tpu_vm runs start in the background on the VM, so they cannot run in turn "
                              "from here: --print them and start each when the TPU is free")
        python, launch_dir = _shown(sys.executable), _shown(str(LAUNCH))
        commands = [run_command(sweep, run, args.launcher, args.mode, launcher_args, python, launch_dir)
                    for run in runs]
        if args.run and args.launcher == "local" and shutil.which("codeio-jax") is None:
            raise LaunchError("codeio-jax is not on PATH: activate the venv (source .venv/bin/activate)")
    except (LaunchError, OSError) as exc:
        print(f"sweep.py: error: {exc}", file=sys.stderr)
        return 2
    failed: list[str] = []
    for index, (run, command) in enumerate(zip(runs, commands), 1):
        header = f"# [{index}/{len(runs)}] {run.name}"
        if not args.run:
            print(f"{header}\n{render(command)}")
            continue
        print(f"{header}\n+ {render(command)}", file=sys.stderr, flush=True)
        try:  # a failed run does not stop the sweep; a rerun resumes each from its checkpoints
            subprocess.run(command, check=True)
        except subprocess.CalledProcessError as exc:
            print(f"sweep.py: run {run.name} exited with {exc.returncode}", file=sys.stderr)
            failed.append(run.name)
        except KeyboardInterrupt:
            return 130
    if args.run:
        print(f"sweep: {len(runs) - len(failed)} of {len(runs)} runs finished"
              + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
