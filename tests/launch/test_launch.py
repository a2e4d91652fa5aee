"""launch/: the exact commands each dry run prints, quoting that survives two shells, sweeps.

No gcloud or docker here: dry runs are compared word for word, and the commands that
matter most run for real through bash with a stand-in `gcloud` (ssh = bash -c on the
--command text) and a stand-in `codeio-jax` that reports the argv and environment it got.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import gin
import pytest

from launch import gpu, sweep, tpu_vm
from launch.shell import LaunchError, quote, render

REPO = Path(__file__).resolve().parents[2]
SUFFIX = "--worker=all"
AWKWARD = [
    "--gin.MODEL_DIR='gs://bucket/runs/my run'",
    "--gin.train.note=\"it's \\\"quoted\\\"\"",
    "--gin.X='$HOME; rm -rf / `id` $(id) && echo !'",
    "tab\there, newline\nhere, unicode: λ→✓",
    "",
    "-",
    "--gin.Y=[1, 2]",
    "a\\b\\\\c",
    "'",
    '"',
]


def script(name: str, *args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """A launcher run as a user runs it."""
    return subprocess.run([sys.executable, str(REPO / "launch" / name), *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=cwd)


def lines(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def executable(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


# A codeio-jax that writes what it was given, as JSON, to stdout.
REPORTER = """import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items()
      if k.startswith(("XLA", "NCCL", "CUDA", "LIBTPU", "SWEEP"))}}), flush=True)
fail = os.environ.get("SWEEP_FAIL_ON")
sys.exit(1 if fail and fail in " ".join(sys.argv[1:]) else 0)
"""


# ---- quoting ---------------------------------------------------------------------------------

def test_quote_round_trips_through_shlex_and_bash():
    words = ["plain", *AWKWARD]
    line = render(words)
    assert shlex.split(line) == words
    done = subprocess.run(["bash", "-c", f"printf '%s\\0' {line}"], capture_output=True, text=True, check=True)
    assert done.stdout.split("\0")[:-1] == words


def test_quote_keeps_gin_strings_readable():
    assert quote("--gin.MODEL_DIR='runs/x'") == "\"--gin.MODEL_DIR='runs/x'\""
    assert quote("--gin.X='$HOME'") == "'--gin.X='\"'\"'$HOME'\"'\"''"  # $ expands in "...": single quotes
    assert quote("v5litepod-16") == "v5litepod-16"


# ---- tpu_vm: create / delete -------------------------------------------------------------------

def test_create_dry_run():
    out = lines(script("tpu_vm.py", "create", "--dry_run", "--name", "tpu1", "--zone", "us-west4-a",
                       "--project", "proj", "--accelerator_type", "v5litepod-16", "--spot"))
    assert out == ["gcloud compute tpus tpu-vm create tpu1 --zone=us-west4-a --project=proj "
                   "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite --spot"]


def test_create_runtime_per_family_and_preemptible():
    cfg = tpu_vm.TpuConfig(name="t", accelerator_type="v4-32", preemptible=True)
    assert tpu_vm.create_commands(cfg) == [["gcloud", "compute", "tpus", "tpu-vm", "create", "t",
                                            "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base",
                                            "--preemptible"]]
    explicit = tpu_vm.TpuConfig(accelerator_type="v6e-8", version="v2-alpha-tpuv6e-custom")
    assert "--version=v2-alpha-tpuv6e-custom" in tpu_vm.create_commands(explicit)[0]


def test_create_queued_dry_run():
    out = lines(script("tpu_vm.py", "create", "--queued", "--dry_run", "--name", "tpu1", "--zone", "us-central2-b",
                       "--accelerator_type", "v4-32", "--spot", "--valid_until", "6h", "--queued_id", "qr1"))
    assert out == ["gcloud compute tpus queued-resources create qr1 --node-id=tpu1 --zone=us-central2-b "
                   "--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base --spot --valid-until-duration=6h"]


@pytest.mark.parametrize("args, message", [
    (["--spot", "--preemptible"], "--spot or --preemptible, not both"),
    (["--queued", "--preemptible"], "queued resources take --spot"),
    (["--valid_until", "2h"], "add --queued"),
    (["--accelerator_type", "v9x-8"], "no default runtime for 'v9x-8': pass --version"),
])
def test_create_errors(args, message):
    done = script("tpu_vm.py", "create", "--dry_run", *args)
    assert done.returncode == 2 and message in done.stderr and not done.stdout


def test_delete_dry_run():
    assert lines(script("tpu_vm.py", "delete", "--dry_run", "--name", "tpu1", "--zone", "z")) == [
        "gcloud compute tpus tpu-vm delete tpu1 --zone=z --quiet"]
    assert lines(script("tpu_vm.py", "delete", "--queued", "--dry_run", "--name", "tpu1", "--zone", "z")) == [
        "gcloud compute tpus queued-resources delete tpu1 --zone=z --force --quiet"]


# ---- tpu_vm: install ---------------------------------------------------------------------------

INSTALL_TAIL = (" && (command -v python3.11 >/dev/null && python3.11 -c 'import ensurepip' 2>/dev/null || "
                "(sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q -y update && "
                "sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q -y install python3.11 "
                "python3.11-venv)) && cd codeio-jax && (test -x .venv/bin/python || python3.11 -m venv .venv) && "
                ".venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -e '.[seqio]' 'jax[tpu]==0.9.9' "
                "-f https://storage.googleapis.com/jax-releases/libtpu_releases.html")


def test_install_copies_the_checkout(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = lines(script("tpu_vm.py", "install", "--dry_run", "--name", "tpu1", "--zone", "z", "--jax_version", "0.9.9",
                       env=env))
    tarball = tmp_path / "tpu1-src.tar.gz"
    assert out == [
        f"bash -c 'set -o pipefail; git -C {REPO} ls-files -z --cached --others --exclude-standard | "
        f"tar -czf {tarball} -C {REPO} --null -T -'",
        f"gcloud compute tpus tpu-vm scp {tarball} tpu1:tpu1-src.tar.gz --zone=z --worker=all",
        "gcloud compute tpus tpu-vm ssh tpu1 --zone=z --worker=all \"--command=mkdir -p codeio-jax && "
        "tar -xzf tpu1-src.tar.gz -C codeio-jax && rm tpu1-src.tar.gz" + INSTALL_TAIL + '"',
    ]


def test_install_clones_a_repository():
    cfg = tpu_vm.TpuConfig(name="tpu1", repo_url="https://example.com/codeio jax.git", repo_ref="v1.0",
                           jax_version="0.9.9")
    [command] = tpu_vm.install_commands(cfg, Path("/unused.tar.gz"))
    assert command[:-1] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "tpu1", "--worker=all"]
    assert command[-1] == (
        "--command=if [ -d codeio-jax/.git ]; then git -C codeio-jax fetch --quiet --tags origin; else git clone "
        "--quiet 'https://example.com/codeio jax.git' codeio-jax; fi && git -C codeio-jax checkout --quiet v1.0"
        + INSTALL_TAIL)
    # The remote text is valid shell.
    subprocess.run(["bash", "-n", "-c", command[-1].removeprefix("--command=")], check=True)


def test_install_pins_the_jax_of_setup_py(tmp_path):
    pin = tpu_vm.pinned_jax()
    assert f'"jax=={pin}"' in (REPO / "setup.py").read_text()
    [*_, ssh] = tpu_vm.install_commands(tpu_vm.TpuConfig(), tmp_path / "src.tar.gz")
    assert f"'jax[tpu]=={pin}'" in ssh[-1]
    (tmp_path / "setup.py").write_text("install_requires=['numpy']")
    with pytest.raises(LaunchError, match="pass --jax_version"):
        tpu_vm.pinned_jax(tmp_path / "setup.py")


def test_install_pack_ships_what_git_would_commit(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / ".gitignore").write_text(".venv/\nruns/\n")
    (repo / "setup.py").write_text('install_requires=["jax==0.9.9"]')
    (repo / "pkg" / "tracked.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    (repo / "pkg" / "new file.py").write_text("y = 2\n")  # untracked, not ignored: shipped
    for ignored in (".venv/bin/python", "runs/x/ckpt"):
        (repo / ignored).parent.mkdir(parents=True)
        (repo / ignored).write_text("")
    tarball = tmp_path / "out.tar.gz"
    pack, scp, ssh = tpu_vm.install_commands(tpu_vm.TpuConfig(), tarball, repo=repo)
    subprocess.run(pack, check=True)
    with tarfile.open(tarball) as archive:
        names = sorted(archive.getnames())
    assert names == [".gitignore", "pkg/new file.py", "pkg/tracked.py", "setup.py"]
    assert "'jax[tpu]==0.9.9'" in ssh[-1]  # the pin of that checkout
    subprocess.run(["bash", "-n", "-c", ssh[-1].removeprefix("--command=")], check=True)


# ---- tpu_vm: run / logs / copy -----------------------------------------------------------------

def test_run_dry_run():
    out = lines(script("tpu_vm.py", "run", "--dry_run", "--name", "tpu1", "--zone", "z", "--env",
                       "LIBTPU_INIT_ARGS=--xla_tpu_enable_async_all_gather=true", "--", "--gin_file",
                       "train/stage1_codeio.gin", "--gin.MODEL_DIR='gs://bucket/runs/x'"))
    assert out == [
        "gcloud compute tpus tpu-vm ssh tpu1 --zone=z --worker=all \"--command=cd codeio-jax && "
        "test -x .venv/bin/codeio-jax || { echo no codeio-jax/.venv/bin/codeio-jax: run install first >&2; exit 1; } "
        "&& mkdir -p logs && (nohup env LIBTPU_INIT_ARGS=--xla_tpu_enable_async_all_gather=true "
        ".venv/bin/codeio-jax train --gin_file train/stage1_codeio.gin \\\"--gin.MODEL_DIR='gs://bucket/runs/x'\\\" "
        "> logs/train.log 2>&1 < /dev/null &)\""]


def test_run_arguments_survive_both_shells():
    """Printed line -> shlex.split -> the --command text -> shlex.split: the arguments, intact."""
    done = script("tpu_vm.py", "run", "--dry_run", "--name", "tpu1", "--", *AWKWARD)
    assert done.returncode == 0, done.stderr
    words = shlex.split(done.stdout)  # one command (an argument holds a newline)
    remote = next(w for w in words if w.startswith("--command=")).removeprefix("--command=")
    remote_words = shlex.split(remote)
    start = len(remote_words) - 1 - remote_words[::-1].index(".venv/bin/codeio-jax")  # the program, not the check
    assert remote_words[start + 1] == "train"
    assert remote_words[start + 2:start + 2 + len(AWKWARD)] == AWKWARD


def test_run_really_detaches_on_every_worker(tmp_path):
    """`run` for real, with a gcloud whose ssh runs the --command text in bash in a home folder."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    (home / "codeio-jax" / ".venv" / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    executable(home / "codeio-jax" / ".venv" / "bin" / "codeio-jax", REPORTER)
    executable(bin_dir / "gcloud", f"""import subprocess, sys
command = next(a for a in sys.argv if a.startswith("--command=")).removeprefix("--command=")
sys.exit(subprocess.run(["bash", "-c", command], cwd={str(home)!r}).returncode)
""")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = script("tpu_vm.py", "run", "--name", "tpu1", "--log_name", "lr 1e-5", "--env", "LIBTPU_INIT_ARGS=a b",
                  "--", *AWKWARD, env=env)
    assert done.returncode == 0, done.stderr
    assert "launch/tpu_vm.py logs --name tpu1 --log_name 'lr 1e-5'" in done.stderr
    log = home / "codeio-jax" / "logs" / "lr 1e-5.log"
    for _ in range(100):  # the program runs detached: wait for its report
        if log.exists() and log.read_text().endswith("\n"):
            break
        time.sleep(0.1)
    report = json.loads(log.read_text())
    assert report["argv"] == ["train", *AWKWARD]
    assert report["env"]["LIBTPU_INIT_ARGS"] == "a b"

    # Without an installed venv the ssh fails at once, and says why.
    (home / "codeio-jax" / ".venv" / "bin" / "codeio-jax").unlink()
    failed = script("tpu_vm.py", "run", "--name", "tpu1", "--", "--gin_file", "x.gin", env=env)
    assert failed.returncode == 1 and "run install first" in failed.stderr


@pytest.mark.parametrize("args, expected", [
    (["--worker", "3"], "gcloud compute tpus tpu-vm ssh tpu1 --zone=z --worker=3 "
                        "'--command=tail -n 100 -F codeio-jax/logs/train.log'"),
    (["--worker", "all", "--no_follow", "--lines", "20", "--log_name", "lr3e-05"],
     "gcloud compute tpus tpu-vm ssh tpu1 --zone=z --worker=all "
     "'--command=tail -n 20 codeio-jax/logs/lr3e-05.log | sed -u \"s/^/$(hostname): /\"'"),
])
def test_logs_dry_run(args, expected):
    assert lines(script("tpu_vm.py", "logs", "--dry_run", "--name", "tpu1", "--zone", "z", *args)) == [expected]


def test_copy_checkpoints_dry_run():
    assert lines(script("tpu_vm.py", "copy-checkpoints", "--dry_run", "gs://bucket/runs/x", "gs://archive/x")) == [
        "gcloud storage rsync --recursive gs://bucket/runs/x gs://archive/x"]
    assert lines(script("tpu_vm.py", "copy-checkpoints", "--dry_run", "--name", "tpu1", "--zone", "z",
                        "runs/x", "local/x")) == [
        "gcloud compute tpus tpu-vm scp --recurse tpu1:codeio-jax/runs/x local/x --zone=z --worker=0"]
    cfg = tpu_vm.TpuConfig(name="tpu1")
    assert tpu_vm.copy_commands(cfg, "/mnt/ckpt", "here", worker="2")[0][6:8] == ["tpu1:/mnt/ckpt", "here"]
    with pytest.raises(LaunchError, match="one worker"):
        tpu_vm.copy_commands(cfg, "runs/x", "here", worker="all")


def test_create_for_real_runs_gcloud(tmp_path):
    executable(tmp_path / "gcloud", f"import sys; open({str(tmp_path / 'argv')!r}, 'w').write(repr(sys.argv[1:]))")
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    done = script("tpu_vm.py", "create", "--name", "t", "--accelerator_type", "v4-8", env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "argv").read_text() == repr(["compute", "tpus", "tpu-vm", "create", "t",
                                                    "--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base"])
    assert done.stderr.startswith("+ gcloud compute tpus tpu-vm create t")
    missing = script("tpu_vm.py", "delete", env={**env, "PATH": str(tmp_path / "nowhere")})
    assert missing.returncode == 2 and "gcloud is not installed" in missing.stderr


def test_remote_paths_and_passthrough_errors():
    done = script("tpu_vm.py", "run", "--dry_run", "--remote_dir", "~/codeio", "--", "--gin_file", "a.gin")
    assert done.returncode == 2 and "without ~" in done.stderr
    done = script("tpu_vm.py", "create", "--dry_run", "--", "--gin_file", "a.gin")
    assert done.returncode == 2 and "go to `run` only" in done.stderr
    with pytest.raises(LaunchError, match="NAME=VALUE"):
        tpu_vm.run_commands(tpu_vm.TpuConfig(), [], env=["not an assignment"])


# ---- tpu_vm: profiles --------------------------------------------------------------------------

@pytest.mark.parametrize("suffix, text", [
    (".toml", 'name = "p-tpu"\nzone = "us-central2-b"\naccelerator_type = "v4-32"\nspot = true\n'),
    (".json", '{"name": "p-tpu", "zone": "us-central2-b", "accelerator_type": "v4-32", "spot": true}'),
    (".ini", "[tpu_vm]\nname = p-tpu\nzone = us-central2-b\naccelerator_type = v4-32\nspot = yes\n"),
])
def test_profile_formats(tmp_path, suffix, text):
    profile = tmp_path / f"tpu{suffix}"
    profile.write_text(text)
    out = lines(script("tpu_vm.py", "create", "--dry_run", "--profile", str(profile)))
    assert out == ["gcloud compute tpus tpu-vm create p-tpu --zone=us-central2-b --accelerator-type=v4-32 "
                   "--version=tpu-ubuntu2204-base --spot"]
    # Flags win over the profile.
    out = lines(script("tpu_vm.py", "create", "--dry_run", "--profile", str(profile), "--zone", "z2", "--no-spot"))
    assert out == ["gcloud compute tpus tpu-vm create p-tpu --zone=z2 --accelerator-type=v4-32 "
                   "--version=tpu-ubuntu2204-base"]


def test_profile_errors(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('name = "x"\nzoen = "typo"\n')
    done = script("tpu_vm.py", "create", "--dry_run", "--profile", str(bad))
    assert done.returncode == 2 and "unknown setting(s) zoen" in done.stderr
    ini = tmp_path / "p.ini"
    ini.write_text("[tpu_vm]\nspot = maybe\n")
    with pytest.raises(LaunchError, match="spot must be true or false"):
        tpu_vm.load_profile(ini)
    ini.write_text("[other]\nname = x\n")
    with pytest.raises(LaunchError, match=r"\[tpu_vm\] section"):
        tpu_vm.load_profile(ini)
    with pytest.raises(LaunchError, match="not .yaml"):
        tpu_vm.load_profile(tmp_path / "p.yaml")


# ---- gpu ---------------------------------------------------------------------------------------

def _without_xla_flags() -> dict:
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def test_gpu_dry_run():
    out = lines(script("gpu.py", "--dry_run", "--gpus", "0,1,2,3", "--", "--gin_file", "train/stage1_codeio.gin",
                       "--gin.MODEL_DIR='runs/x y'", env=_without_xla_flags()))
    assert out == ["env CUDA_VISIBLE_DEVICES=0,1,2,3 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 NCCL_DEBUG=WARN "
                   "XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true codeio-jax train "
                   "--gin_file train/stage1_codeio.gin \"--gin.MODEL_DIR='runs/x y'\""]


def test_gpu_xla_flags_compose():
    env = {**_without_xla_flags(), "XLA_FLAGS": "--xla_dump_to=/tmp/d"}
    out = lines(script("gpu.py", "--dry_run", "--mode", "eval", "--mem_fraction", "0.8", "--nccl_debug", "INFO",
                       "--xla_flag=--xla_gpu_triton_gemm_any=true", "--env", "FOO=a b", "--", "--gin_file", "e.gin",
                       env=env))
    assert out == ["env XLA_PYTHON_CLIENT_MEM_FRACTION=0.8 NCCL_DEBUG=INFO 'XLA_FLAGS=--xla_gpu_enable_latency_"
                   "hiding_scheduler=true --xla_dump_to=/tmp/d --xla_gpu_triton_gemm_any=true' 'FOO=a b' "
                   "codeio-jax eval --gin_file e.gin"]
    assert "XLA_FLAGS" not in gpu.jax_env(default_xla_flags=False)


def test_gpu_docker_dry_run():
    out = lines(script("gpu.py", "--dry_run", "--docker", "ghcr.io/me/codeio-jax:1", "--gpus", "0,1", "--",
                       "--gin_file", "a.gin", env=_without_xla_flags(), cwd=REPO))
    assert out == [f"docker run --rm --gpus '\"device=0,1\"' --ipc=host -e XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 "
                   f"-e NCCL_DEBUG=WARN -e XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true "
                   f"-v {REPO}:{REPO} -w {REPO} ghcr.io/me/codeio-jax:1 codeio-jax train --gin_file a.gin"]
    assert gpu.docker_command({}, None, "train", [], "img", "/w")[3:5] == ["--gpus", "all"]


@pytest.mark.parametrize("args, message", [
    (["--gpus", "0,x"], "comma-separated GPU indices"),
    (["--gpus", "0,0"], "distinct"),
    (["--mem_fraction", "0"], "a fraction in (0, 1]"),
    (["--mem_fraction", "1.5"], "a fraction in (0, 1]"),
    (["--env", "1BAD=x"], "NAME=VALUE"),
])
def test_gpu_errors(args, message):
    done = script("gpu.py", "--dry_run", *args)
    assert done.returncode == 2 and message in done.stderr


def test_gpu_runs_codeio_jax_with_the_environment(tmp_path):
    executable(tmp_path / "codeio-jax", REPORTER)
    env = {**_without_xla_flags(), "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    done = script("gpu.py", "--gpus", "2,0", "--", "--gin_file", "a.gin", AWKWARD[1], env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["argv"] == ["train", "--gin_file", "a.gin", AWKWARD[1]]
    assert report["env"] == {"CUDA_VISIBLE_DEVICES": "2,0", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.9",
                             "NCCL_DEBUG": "WARN", "XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=true"}
    missing = script("gpu.py", "--", "--gin_file", "a.gin", env={**env, "PATH": "/nonexistent"})
    assert missing.returncode == 2 and "codeio-jax is not on PATH" in missing.stderr


# ---- sweep -------------------------------------------------------------------------------------

EXAMPLE = REPO / "gin" / "sweeps" / "lr_sweep_example.json"


def test_example_sweep_prints_four_named_runs():
    out = lines(script("sweep.py", str(EXAMPLE)))
    names = ["lr1e-05-cosine", "lr1e-05-linear", "lr3e-05-cosine", "lr3e-05-linear"]
    assert out[0::2] == [f"# [{i}/4] {name}" for i, name in enumerate(names, 1)]
    assert out[1] == ("codeio-jax train --gin_file train/stage1_codeio.gin --gin.train.steps=2000 "
                      "--gin.OptimizerConfig.warmup_steps=100 --gin.OptimizerConfig.learning_rate=1e-05 "
                      "\"--gin.OptimizerConfig.schedule='cosine'\" "
                      "\"--gin.MODEL_DIR='runs/sweeps/stage1_lr/lr1e-05-cosine'\"")
    dirs = [shlex.split(line)[-1] for line in out[1::2]]
    assert dirs == [f"--gin.MODEL_DIR='runs/sweeps/stage1_lr/{name}'" for name in names]


def test_sweep_product_default_names_and_unique_dirs():
    spec = sweep.parse_sweep({"base": ["a.gin", "b.gin"], "search_paths": ["x", "y"],
                              "grid": {"scope/Opt.learning_rate": [1e-5, 3e-5, 1e-4],
                                       "MODEL": ["@small()", "@big()"], "train.remat": [None, "'full'"]}})
    runs = sweep.expand(spec, root="gs://b/sweeps/")
    assert len(runs) == 3 * 2 * 2
    assert runs[0].name == "learning_rate=1e-05,model=small,remat=None"
    assert runs[-1].name == "learning_rate=0.0001,model=big,remat=full"
    assert len({r.model_dir for r in runs}) == 12 and all(r.model_dir.startswith("gs://b/sweeps/l") for r in runs)
    assert sweep.codeio_args(spec, runs[1]) == [
        "--gin_file", "a.gin", "--gin_file", "b.gin", "--gin_search_paths", "x,y",
        "--gin.scope/Opt.learning_rate=1e-05", "--gin.MODEL=@small()", "--gin.train.remat='full'",
        "--gin.MODEL_DIR='gs://b/sweeps/learning_rate=1e-05,model=small,remat=full'"]


def test_sweep_launcher_commands():
    spec = sweep.load_sweep(EXAMPLE)
    run = sweep.expand(spec)[0]
    args = sweep.codeio_args(spec, run)
    assert sweep.run_command(spec, run, "tpu_vm", "eval", ["--name", "my-tpu"], "python", "launch") == [
        "python", "launch/tpu_vm.py", "run", "--name", "my-tpu", "--mode", "eval", "--log_name", "lr1e-05-cosine",
        "--", *args]
    assert sweep.run_command(spec, run, "gpu", "train", ["--gpus", "0,1"], "python", "launch") == [
        "python", "launch/gpu.py", "--gpus", "0,1", "--", *args]
    # The printed launcher commands are themselves valid dry runs.
    out = lines(script("sweep.py", str(EXAMPLE), "--launcher", "tpu_vm", "--root", "gs://b/s", "--", "--name", "t"))
    words = shlex.split(out[1])
    assert words[1].endswith("launch/tpu_vm.py")
    at = words.index("--")
    ssh = subprocess.run([*words[:at], "--dry_run", *words[at:]], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "--log_name" not in ssh and "logs/lr1e-05-cosine.log" in ssh and "'gs://b/s/lr1e-05-cosine'" in ssh


BASE = {"base": ["a.gin"], "root": "runs/s"}


@pytest.mark.parametrize("data, message", [
    ([1], "a sweep is a JSON object"),
    ({**BASE, "grid": {"x.y": [1]}, "gird": {}}, "unknown key(s) 'gird'"),
    ({"root": "r", "grid": {"x.y": [1]}}, '"base" must be a non-empty list'),
    ({**BASE, "grid": {}}, '"grid" must map at least one binding'),
    ({**BASE, "grid": {"x.y": []}}, 'grid "x.y" must be a non-empty list'),
    ({**BASE, "grid": {"x.y": 3}}, 'grid "x.y" must be a non-empty list'),
    ({**BASE, "grid": {"x.y z": [1]}}, "'x.y z' is not a gin binding name"),
    ({**BASE, "grid": {"x.y": [1]}, "bindings": {"x.y": 2}}, 'in both "grid" and "bindings"'),
    ({**BASE, "grid": {"MODEL_DIR": ["'a'"]}}, '"MODEL_DIR" is set per run'),
    ({**BASE, "grid": {"x.y": [1]}, "name": "run-{x.z}"}, "refers to 'x.z', not grid keys (x.y)"),
    ({**BASE, "grid": {"x.y": [1]}, "search_paths": "a,b"}, '"search_paths" must be a list'),
])
def test_sweep_file_errors(data, message):
    with pytest.raises(LaunchError) as error:
        sweep.parse_sweep(data)
    assert message in str(error.value)


def test_sweep_name_collisions_and_missing_root():
    spec = sweep.parse_sweep({**BASE, "grid": {"a.lr": [1, 2], "b.wd": [0, 1]}, "name": "lr{a.lr}"})
    with pytest.raises(LaunchError, match=r"both named 'lr1'.*put the keys that differ into \"name\""):
        sweep.expand(spec)
    repeated = sweep.parse_sweep({**BASE, "grid": {"a.lr": [1, 1]}})
    with pytest.raises(LaunchError, match="both named 'lr=1'"):
        sweep.expand(repeated)
    with pytest.raises(LaunchError, match="give --root"):
        sweep.expand(sweep.parse_sweep({"base": ["a.gin"], "grid": {"a.lr": [1]}}))


def test_sweep_cli_errors(tmp_path):
    broken = tmp_path / "s.json"
    broken.write_text('{"base": ["a.gin"],}')
    done = script("sweep.py", str(broken))
    assert done.returncode == 2 and "not JSON" in done.stderr
    done = script("sweep.py", str(EXAMPLE), "--run", "--launcher", "tpu_vm")
    assert done.returncode == 2 and "cannot run in turn" in done.stderr
    done = script("sweep.py", str(EXAMPLE), "--", "--gpus", "0")
    assert done.returncode == 2 and "add --launcher gpu or tpu_vm" in done.stderr


@gin.configurable("launch_test_train")
def _gin_train(model_dir=gin.REQUIRED, learning_rate=0.0, schedule="constant", model=None):
    return model_dir, learning_rate, schedule, model


@gin.configurable("launch_test_model")
def _gin_model(size="small"):
    return size


def test_sweep_bindings_parse_in_gin(tmp_path):
    """Each run's --gin. bindings, through the project's gin flag parsing, configure that run."""
    from codeio_jax.gin_flags import parse_gin

    (tmp_path / "recipe.gin").write_text("launch_test_train.model_dir = %MODEL_DIR\n"
                                         "launch_test_train.model = %MODEL\nMODEL = None\n")
    spec = sweep.parse_sweep({"base": ["recipe.gin"], "search_paths": [str(tmp_path)],
                              "bindings": {"launch_test_model.size": "'big'"},
                              "grid": {"launch_test_train.learning_rate": [1e-5, 3e-5],
                                       "launch_test_train.schedule": ["'cosine'", "'linear'"],
                                       "MODEL": ["@launch_test_model()"]}})
    try:
        for run in sweep.expand(spec, root=str(tmp_path / "runs")):
            args = sweep.codeio_args(spec, run)
            files = [args[i + 1] for i, a in enumerate(args) if a == "--gin_file"]
            bindings = [a.removeprefix("--gin.") for a in args if a.startswith("--gin.")]
            parse_gin(files, args[args.index("--gin_search_paths") + 1], bindings)
            model_dir, lr, schedule, model = _gin_train()
            values = dict(run.bindings)
            assert model_dir == run.model_dir
            assert (lr, schedule) == (float(values["launch_test_train.learning_rate"]),
                                      values["launch_test_train.schedule"].strip("'"))
            assert model == "big"
    finally:
        gin.clear_config()


def test_sweep_run_runs_each_in_turn_and_reports_failures(tmp_path):
    executable(tmp_path / "codeio-jax", REPORTER)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "SWEEP_FAIL_ON": "lr1e-05-linear"}
    done = script("sweep.py", str(EXAMPLE), "--run", "--root", str(tmp_path / "runs"), env=env)
    assert done.returncode == 1
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["argv"][-1] for r in reports] == [f"--gin.MODEL_DIR='{tmp_path}/runs/{name}'" for name in
                                                ["lr1e-05-cosine", "lr1e-05-linear", "lr3e-05-cosine",
                                                 "lr3e-05-linear"]]
    assert "3 of 4 runs finished; failed: lr1e-05-linear" in done.stderr
