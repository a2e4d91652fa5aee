"""Cloud TPU VM lifecycle for codeio-jax: create, install, run, logs, copy-checkpoints, delete.

    python launch/tpu_vm.py create --name my-tpu --zone us-west4-a --accelerator_type v5litepod-16 --spot
    python launch/tpu_vm.py create --queued --valid_until 6h ...     # a queued resource instead
    python launch/tpu_vm.py install --name my-tpu                    # copy this checkout, venv, jax[tpu]
    python launch/tpu_vm.py run --name my-tpu -- --gin_file train/stage1_codeio.gin \\
        --gin.MODEL_DIR="'gs://bucket/runs/x'"
    python launch/tpu_vm.py logs --name my-tpu [--worker 3|all]
    python launch/tpu_vm.py copy-checkpoints gs://bucket/runs/x gs://archive/x
    python launch/tpu_vm.py delete --name my-tpu [--queued]

Every subcommand takes --dry_run (print the commands, one per line, run nothing) and
--profile FILE (.toml, .json, or .ini with a [tpu_vm] section) whose keys are the
fields of TpuConfig; flags override the profile, the profile overrides the defaults.
Zone and project left unset fall back to gcloud's compute/zone and core/project.

`run` starts the same command on every worker at once (multi-host JAX: each worker is
one process; the trainer calls jax.distributed.initialize()), detached with nohup into
<remote_dir>/logs/<log_name>.log on each worker, so a dropped ssh does not stop it.
Remote paths are relative to the remote home directory (ssh starts there).
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the `launch` package importable
    sys.path.insert(0, str(REPO))
from launch.shell import Command, LaunchError, execute, quote, render, split_passthrough  # noqa: E402

LIBTPU_RELEASES = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
# The runtime (--version) each TPU family is documented with for JAX.
RUNTIMES = {"v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base", "v4": "tpu-ubuntu2204-base",
            "v5litepod": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}


@dataclasses.dataclass(frozen=True)
class TpuConfig:
    name: str = "codeio-jax"
    zone: str | None = None  # None: gcloud's compute/zone property
    project: str | None = None  # None: gcloud's core/project property
    accelerator_type: str = "v5litepod-16"
    version: str | None = None  # None: RUNTIMES[family of accelerator_type]
    spot: bool = False
    preemptible: bool = False
    queued_id: str | None = None  # None: the queued resource takes the node's name
    valid_until: str | None = None  # queued only: give up after this long, e.g. "6h"
    remote_dir: str = "codeio-jax"
    python: str = "python3.11"  # setup.py needs >= 3.11; Ubuntu 22.04 runtimes ship 3.10
    jax_version: str | None = None  # None: the pin in setup.py
    repo_url: str | None = None  # None: copy this checkout (tracked and untracked, not ignored)
    repo_ref: str = "origin/HEAD"  # with repo_url: a commit, tag or origin/<branch>, checked out detached


def load_profile(path: Path) -> dict:
    """The settings in a profile file, checked against TpuConfig's fields."""
    suffix = path.suffix.lower()
    if suffix == ".toml":
        data = tomllib.loads(path.read_text())
    elif suffix == ".json":
        data = json.loads(path.read_text())
    elif suffix in (".ini", ".cfg"):
        parser = configparser.ConfigParser()
        parser.read_string(path.read_text())
        if not parser.has_section("tpu_vm"):
            raise LaunchError(f"{path}: an INI profile needs a [tpu_vm] section")
        data = dict(parser["tpu_vm"])
    else:
        raise LaunchError(f"{path}: a profile is .toml, .json, .ini or .cfg, not {suffix or 'no suffix'}")
    if not isinstance(data, dict):
        raise LaunchError(f"{path}: a profile is a table of settings")
    fields = {f.name: f for f in dataclasses.fields(TpuConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise LaunchError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    for key in ("spot", "preemptible"):
        if isinstance(data.get(key), str):  # INI values are all strings
            text = data[key].strip().lower()
            if text not in ("true", "false", "yes", "no", "1", "0"):
                raise LaunchError(f"{path}: {key} must be true or false, got {data[key]!r}")
            data[key] = text in ("true", "yes", "1")
    return data


def resolve(profile: dict, flags: dict) -> TpuConfig:
    """Defaults, then the profile, then the flags that were given (not None)."""
    return TpuConfig(**{**profile, **{k: v for k, v in flags.items() if v is not None}})


def _scope(cfg: TpuConfig) -> Command:
    return ([f"--zone={cfg.zone}"] if cfg.zone else []) + ([f"--project={cfg.project}"] if cfg.project else [])


def _runtime(cfg: TpuConfig) -> str:
    if cfg.version:
        return cfg.version
    family = cfg.accelerator_type.rsplit("-", 1)[0]
    if family not in RUNTIMES:
        raise LaunchError(f"no default runtime for {cfg.accelerator_type!r}: pass --version")
    return RUNTIMES[family]


def create_commands(cfg: TpuConfig, queued: bool = False) -> list[Command]:
    if cfg.spot and cfg.preemptible:
        raise LaunchError("choose --spot or --preemptible, not both")
    if not queued:
        if cfg.valid_until:
            raise LaunchError("--valid_until applies to queued resources only: add --queued")
        return [["gcloud", "compute", "tpus", "tpu-vm", "create", cfg.name, *_scope(cfg),
                 f"--accelerator-type={cfg.accelerator_type}", f"--version={_runtime(cfg)}",
                 *(["--spot"] if cfg.spot else []), *(["--preemptible"] if cfg.preemptible else [])]]
    if cfg.preemptible:
        raise LaunchError("queued resources take --spot, not --preemptible")
    # Note: queued resources name the runtime --runtime-version, where tpu-vm create says --version.
    return [["gcloud", "compute", "tpus", "queued-resources", "create", cfg.queued_id or cfg.name,
             f"--node-id={cfg.name}", *_scope(cfg), f"--accelerator-type={cfg.accelerator_type}",
             f"--runtime-version={_runtime(cfg)}", *(["--spot"] if cfg.spot else []),
             *([f"--valid-until-duration={cfg.valid_until}"] if cfg.valid_until else [])]]


def ssh(cfg: TpuConfig, remote: str, worker: str = "all") -> Command:
    """`remote` is shell text for the worker's login shell: quote user values into it."""
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", cfg.name, *_scope(cfg), f"--worker={worker}",
            f"--command={remote}"]


def _check_remote_dir(cfg: TpuConfig) -> str:
    if cfg.remote_dir.startswith("~"):
        # A quoted ~ is not expanded; ssh starts in the home directory anyway.
        raise LaunchError(f"remote_dir {cfg.remote_dir!r}: give it relative to the home directory, without ~")
    return quote(cfg.remote_dir)


def pinned_jax(setup_py: Path = REPO / "setup.py") -> str:
    """The jax version setup.py pins, so the TPU VM runs what the tests ran."""
    match = re.search(r"""["']jax==([^"']+)["']""", setup_py.read_text())
    if not match:
        raise LaunchError(f"no jax==VERSION pin in {setup_py}: pass --jax_version")
    return match.group(1)


def install_commands(cfg: TpuConfig, tarball: Path, repo: Path = REPO) -> list[Command]:
    """Source on every worker (a clone of repo_url, or this checkout packed and copied),
    then python, a venv in remote_dir/.venv, and the package with jax[tpu]."""
    q, d = quote, _check_remote_dir(cfg)
    commands: list[Command] = []
    if cfg.repo_url:
        source = (f"if [ -d {d}/.git ]; then git -C {d} fetch --quiet --tags origin; "
                  f"else git clone --quiet {q(cfg.repo_url)} {d}; fi && git -C {d} checkout --quiet {q(cfg.repo_ref)}")
    else:
        # What git would commit (tracked and untracked, not ignored): no .venv, no runs/.
        pack = (f"set -o pipefail; git -C {q(str(repo))} ls-files -z --cached --others --exclude-standard"
                f" | tar -czf {q(str(tarball))} -C {q(str(repo))} --null -T -")
        commands.append(["bash", "-c", pack])
        commands.append(["gcloud", "compute", "tpus", "tpu-vm", "scp", str(tarball), f"{cfg.name}:{tarball.name}",
                         *_scope(cfg), "--worker=all"])
        source = f"mkdir -p {d} && tar -xzf {q(tarball.name)} -C {d} && rm {q(tarball.name)}"
    py, jax = q(cfg.python), cfg.jax_version or pinned_jax(repo / "setup.py")
    # apt waits for the lock: unattended-upgrades holds it for a while after boot.
    apt = "sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q -y"
    python = (f"(command -v {py} >/dev/null && {py} -c 'import ensurepip' 2>/dev/null"
              f" || ({apt} update && {apt} install {py} {q(cfg.python + '-venv')}))")
    venv = (f"cd {d} && (test -x .venv/bin/python || {py} -m venv .venv) && .venv/bin/pip install -q --upgrade pip"
            f" && .venv/bin/pip install -e {q('.[seqio]')} {q(f'jax[tpu]=={jax}')} -f {LIBTPU_RELEASES}")
    commands.append(ssh(cfg, f"{source} && {python} && {venv}"))
    return commands


def run_commands(cfg: TpuConfig, train_args: Sequence[str], mode: str = "train", log_name: str = "train",
                 env: Sequence[str] = ()) -> list[Command]:
    """`codeio-jax MODE ARGS` on all workers, detached (nohup, no terminal, output to the log)."""
    for item in env:
        if not re.fullmatch(r"[A-Za-z_]\w*=.*", item, flags=re.S):
            raise LaunchError(f"--env {item!r}: expected NAME=VALUE")
    if "/" in log_name or not log_name:
        raise LaunchError(f"log_name {log_name!r}: a file name, without '/'")
    d, log = _check_remote_dir(cfg), quote(f"logs/{log_name}.log")
    program = render([*(["env", *env] if env else []), ".venv/bin/codeio-jax", mode, *train_args])
    # Only the program goes to the background: a missing checkout or venv fails the ssh, loudly.
    # (No $(...) here: the remote text then prints in plain double quotes.)
    check = f"test -x .venv/bin/codeio-jax || {{ echo no {d}/.venv/bin/codeio-jax: run install first >&2; exit 1; }}"
    return [ssh(cfg, f"cd {d} && {check} && mkdir -p logs && (nohup {program} > {log} 2>&1 < /dev/null &)")]


def logs_commands(cfg: TpuConfig, worker: str = "0", log_name: str = "train", lines: int = 100,
                  follow: bool = True) -> list[Command]:
    _check_remote_dir(cfg)
    log = quote(f"{cfg.remote_dir}/logs/{log_name}.log")
    tail = f"tail -n {int(lines)}{' -F' if follow else ''} {log}"
    if worker == "all":  # interleaved output: say whose line each is
        tail += ' | sed -u "s/^/$(hostname): /"'
    return [ssh(cfg, tail, worker=worker)]


def copy_commands(cfg: TpuConfig, src: str, dest: str, worker: str = "0") -> list[Command]:
    """gs:// sources sync with gcloud storage; any other source is a path on a worker
    (relative: to remote_dir, where runs start), copied with scp. A multi-host run keeps
    MODEL_DIR on gs://: each worker's own disk would hold only that worker's part."""
    if src.startswith("gs://"):
        return [["gcloud", "storage", "rsync", "--recursive", src, dest]]
    if worker == "all":
        raise LaunchError("copy from one worker: --worker N (each worker has its own disk)")
    _check_remote_dir(cfg)
    path = src if src.startswith("/") else f"{cfg.remote_dir}/{src}"
    return [["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", f"{cfg.name}:{path}", dest,
             *_scope(cfg), f"--worker={worker}"]]


def delete_commands(cfg: TpuConfig, queued: bool = False) -> list[Command]:
    if queued:  # --force: delete the node with it, else an ACTIVE resource refuses
        return [["gcloud", "compute", "tpus", "queued-resources", "delete", cfg.queued_id or cfg.name,
                 *_scope(cfg), "--force", "--quiet"]]
    return [["gcloud", "compute", "tpus", "tpu-vm", "delete", cfg.name, *_scope(cfg), "--quiet"]]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", type=Path, help="settings file (.toml, .json, .ini [tpu_vm])")
    common.add_argument("--name", help="TPU VM (node) name (default: codeio-jax)")
    common.add_argument("--zone", help="default: gcloud's compute/zone")
    common.add_argument("--project", help="default: gcloud's core/project")
    common.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--remote_dir", help="checkout on the workers, relative to home (default: codeio-jax)")

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", parents=[common], help="a TPU VM, or a queued resource (--queued)")
    create.add_argument("--accelerator_type", help="e.g. v5litepod-16, v4-32 (default: v5litepod-16)")
    create.add_argument("--version", help="runtime (default: the one documented for the TPU family)")
    create.add_argument("--spot", action=argparse.BooleanOptionalAction, default=None)
    create.add_argument("--preemptible", action=argparse.BooleanOptionalAction, default=None)
    create.add_argument("--queued", action="store_true", help="create a queued resource for the node")
    create.add_argument("--queued_id", help="queued resource ID (default: the node name)")
    create.add_argument("--valid_until", help="queued: stop waiting after this duration, e.g. 6h")
    install = sub.add_parser("install", parents=[common, remote], help="source, venv and jax[tpu] on all workers")
    install.add_argument("--python", help="interpreter for the venv (default: python3.11; apt-installed if missing)")
    install.add_argument("--jax_version", help="default: the jax pin in setup.py")
    install.add_argument("--repo_url", help="clone this instead of copying the local checkout")
    install.add_argument("--repo_ref", help="with --repo_url: commit, tag or origin/<branch>")
    run = sub.add_parser("run", parents=[common, remote], help="codeio-jax on all workers (args after --)",
                         usage="%(prog)s [flags] -- CODEIO_JAX_ARGS...")
    run.add_argument("--mode", choices=["train", "eval"], default="train", help="the codeio-jax subcommand")
    run.add_argument("--log_name", default="train", help="log file logs/<log_name>.log on each worker")
    run.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                     help="environment for the run, e.g. LIBTPU_INIT_ARGS=... (repeatable)")
    logs = sub.add_parser("logs", parents=[common, remote], help="follow worker N's log, or tail all")
    logs.add_argument("--worker", default="0", help="a worker index, or all")
    logs.add_argument("--log_name", default="train")
    logs.add_argument("--lines", type=int, default=100)
    logs.add_argument("--no_follow", action="store_true", help="print the last lines and stop")
    copy = sub.add_parser("copy-checkpoints", parents=[common, remote], help="rsync gs:// or scp from a worker")
    copy.add_argument("src", help="gs://... (MODEL_DIR), or a path on the worker")
    copy.add_argument("dest", help="gs://... or a local folder")
    copy.add_argument("--worker", default="0", help="for a path on a worker: which one")
    delete = sub.add_parser("delete", parents=[common], help="the TPU VM, or the queued resource (--queued)")
    delete.add_argument("--queued", action="store_true")
    delete.add_argument("--queued_id", help="queued resource ID (default: the node name)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    own, passthrough = split_passthrough(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    try:
        if passthrough and args.command != "run":
            raise LaunchError(f"arguments after -- go to `run` only, not `{args.command}`")
        fields = {f.name for f in dataclasses.fields(TpuConfig)}
        cfg = resolve(load_profile(args.profile) if args.profile else {},
                      {k: v for k, v in vars(args).items() if k in fields})
        if args.command == "create":
            commands = create_commands(cfg, queued=args.queued)
        elif args.command == "install":
            commands = install_commands(cfg, Path(tempfile.gettempdir()) / f"{cfg.name}-src.tar.gz")
        elif args.command == "run":
            commands = run_commands(cfg, passthrough, args.mode, args.log_name, args.env)
        elif args.command == "logs":
            commands = logs_commands(cfg, args.worker, args.log_name, args.lines, not args.no_follow)
        elif args.command == "copy-checkpoints":
            commands = copy_commands(cfg, args.src, args.dest, args.worker)
        else:
            commands = delete_commands(cfg, queued=args.queued)
        execute(commands, args.dry_run)
    except (LaunchError, OSError, tomllib.TOMLDecodeError, json.JSONDecodeError, configparser.Error) as exc:
        print(f"tpu_vm.py: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"tpu_vm.py: error: `{render(exc.cmd)}` exited with {exc.returncode}", file=sys.stderr)
        return exc.returncode or 1
    if args.command == "run" and not args.dry_run:
        where = ["--name", cfg.name, *(["--zone", cfg.zone] if cfg.zone else []),
                 *(["--project", cfg.project] if cfg.project else [])]
        print("started on all workers; follow with: "
              + render(["python", "launch/tpu_vm.py", "logs", *where, "--log_name", args.log_name]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
