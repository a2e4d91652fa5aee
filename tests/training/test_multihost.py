"""Multi-process training on loopback, through `codeio-jax train`: 2 processes
x 4 CPU devices train as 1 process x 8 devices does (synthetic and SeqIO
input), a checkpoint of the 2-process job resumes in 1 process on 4 devices,
and processes started with different gin configs all fail with one message.

Why the numbers agree to 1e-6 (relative) and not bit for bit: the loss and
the gradients are sums over the devices' rows, and across processes those
all-reduces run through gloo, which adds the devices' partial sums in another
order than XLA's all-reduce inside one process does. float32 addition is not
associative: a loss differs in its last bit or two, and so, after an update,
do the parameters. The data is the same: the SeqIO runs count the same loss
tokens at every step, exactly.
"""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.test_recipes import common, data  # noqa: F401 (data: the SeqIO fixture)

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
TOLERANCE = 1e-6  # relative; the module docstring says why not 0


@dataclasses.dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_job(command, processes, devices, logs: Path, timeout=600) -> list[Finished]:
    """`command` (or `command(process_id)`) started as `processes` jax processes
    of one job on loopback, each with `devices` CPU devices; what each printed,
    in process order."""
    env = {key: value for key, value in os.environ.items() if key not in DISTRIBUTED_ENV}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    if processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}", JAX_NUM_PROCESSES=str(processes))
    logs.mkdir(parents=True, exist_ok=True)
    jobs = []
    for process in range(processes):
        # Files, not pipes: a process blocked on a full pipe would hold up the whole job.
        out, err = open(logs / f"{process}.out", "w"), open(logs / f"{process}.err", "w")
        jobs.append(subprocess.Popen(command(process) if callable(command) else command, cwd=REPO,
                                     stdout=out, stderr=err,
                                     env={**env, "JAX_PROCESS_ID": str(process)} if processes > 1 else env))
        out.close()
        err.close()
    deadline = time.monotonic() + timeout
    try:
        for job in jobs:
            job.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"the job was not done within {timeout} s (a hang?); its output is in {logs}") from None
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
    return [Finished(job.returncode, (logs / f"{process}.out").read_text(), (logs / f"{process}.err").read_text())
            for process, job in enumerate(jobs)]


def train_command(*flags):
    return [sys.executable, "-m", "codeio_jax.cli", "train", *map(str, flags)]


def smoke_flags(model_dir, steps):
    """gin/train/smoke_cpu.gin with FSDP over every device, so the 2-process
    checkpoint holds parameters sharded across both processes."""
    return ["--gin_file", "train/smoke_cpu.gin", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.train.steps={steps}",
            "--gin.train.log_every=1",
            "--gin.train.checkpoint_every=3", "--gin.train.mesh=@MeshConfig()", "--gin.MeshConfig.data=1",
            "--gin.MeshConfig.fsdp=-1"]


def metrics(model_dir) -> dict[int, dict]:
    rows = [json.loads(line) for line in (Path(model_dir) / "metrics.jsonl").read_text().splitlines()]
    by_step = {row["step"]: row for row in rows}
    assert len(by_step) == len(rows), "a step logged twice: a second process wrote metrics"
    return by_step


def succeeded(finished: list[Finished]) -> None:
    for process, result in enumerate(finished):
        assert result.returncode == 0, f"process {process}: {result.stderr[-3000:]}"


def printed(result: Finished) -> list[str]:
    """The trainer's own lines (gloo prints its connections to stdout too)."""
    return [line for line in result.stdout.splitlines() if line.startswith(("step ", "train:"))]


def assert_same_numbers(expected: dict[int, dict], got: dict[int, dict], steps) -> None:
    assert sorted(got) == list(steps)
    for step in steps:
        for name in ("loss", "grad_norm"):
            assert got[step][name] == pytest.approx(expected[step][name], rel=TOLERANCE), (step, name)


# Run from the repository root (python -c puts it on sys.path).
PLACEMENT = """
import json
import sys
from codeio_jax.training import partitioning
partitioning.initialize_distributed()
import jax
import numpy as np
from jax.experimental import multihost_utils
from codeio_jax.training.input import host_part, to_global
from codeio_jax.training.partitioning import MeshConfig, batch_sharding, make_mesh

first, second = (sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id) for p in (0, 1))
orders = {"by process": first + second, "interleaved": [d for pair in zip(first, second) for d in pair],
          "tensor across processes": first[:2] + second[:2] + first[2:] + second[2:]}
layouts = {"data": (MeshConfig(data=8), "by process"),
           "fsdp x tensor": (MeshConfig(data=1, fsdp=2, tensor=4), "by process"),
           "interleaved": (MeshConfig(data=8), "interleaved"),
           "tensor across processes": (MeshConfig(data=2, tensor=4), "tensor across processes")}
tokens = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
report = {}
for name, (config, order) in layouts.items():
    sharding = batch_sharding(make_mesh(config, orders[order]), config.rules)
    placed = to_global({"tokens": tokens}, sharding)["tokens"]
    whole = np.asarray(multihost_utils.process_allgather(placed, tiled=True))
    report[name] = {"rows": [int(row) for row in host_part(tokens, sharding)[:, 0] // 3],
                    "placed": whole.tolist() == tokens.tolist()}
with open(sys.argv[1], "w") as f:
    json.dump(report, f)
"""


def test_each_process_places_its_own_rows_of_the_global_batch_for_any_mesh(tmp_path):
    # Each report goes to a file of its own: on stdout, gloo's C++ lines can land
    # inside the report's line (C++ and Python buffer stdout apart).
    reports = [tmp_path / f"report-{process}.json" for process in range(2)]
    done = run_job(lambda process: [sys.executable, "-c", PLACEMENT, str(reports[process])], 2, 4, tmp_path,
                   timeout=300)
    succeeded(done)
    first, second = (json.loads(report.read_text()) for report in reports)
    assert all(layout["placed"] for report in (first, second) for layout in report.values())
    assert first["data"]["rows"] == first["fsdp x tensor"]["rows"] == [0, 1, 2, 3]
    assert second["data"]["rows"] == [4, 5, 6, 7]
    assert first["interleaved"]["rows"] == [0, 2, 4, 6] and second["interleaved"]["rows"] == [1, 3, 5, 7]
    # Processes that split the tensor axis between them hold the same rows, all of them.
    assert first["tensor across processes"]["rows"] == second["tensor across processes"]["rows"] == list(range(8))


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    """The smoke recipe for 6 steps as 1 process x 8 devices and as 2 x 4."""
    tmp = tmp_path_factory.mktemp("multihost")
    one = run_job(train_command(*smoke_flags(tmp / "one", 6)), 1, 8, tmp / "logs-one")
    succeeded(one)
    two = run_job(train_command(*smoke_flags(tmp / "two", 6)), 2, 4, tmp / "logs-two")
    succeeded(two)
    return tmp, one, two


@pytest.mark.slow
def test_two_processes_train_like_one_on_synthetic_input(synthetic_runs):
    tmp, one, two = synthetic_runs
    single, double = metrics(tmp / "one"), metrics(tmp / "two")
    assert len({row["loss"] for row in single.values()}) == 6  # the updates change the loss
    assert_same_numbers(single, double, range(1, 7))
    # Process 0 alone prints the progress and the summary, as one process would.
    assert [line.split("  ")[0] for line in printed(two[0])] == (
        [f"step {step}" for step in range(1, 7)] + [f"train: steps 0..6; model_dir {tmp / 'two'}"])
    assert printed(two[1]) == []


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process_on_four_devices(synthetic_runs, tmp_path):
    tmp, _, _ = synthetic_runs
    uninterrupted = metrics(tmp / "two")
    resumed = tmp_path / "resumed"
    # Step 3's checkpoint alone, as the 2-process job had it then.
    shutil.copytree(tmp / "two" / "checkpoints" / "3", resumed / "checkpoints" / "3")
    done = run_job(train_command(*smoke_flags(resumed, 6)), 1, 4, tmp_path / "logs")
    succeeded(done)
    assert "resumed at step 3" in done[0].stdout
    assert_same_numbers(uninterrupted, metrics(resumed), range(4, 7))


@pytest.mark.slow
def test_two_processes_train_like_one_on_seqio_input(data, tmp_path):  # noqa: F811 (the imported fixture)
    tmp, tfrecords, tokenizer = data
    runs = {}
    for processes, devices in ((1, 8), (2, 4)):
        name = f"{processes}x{devices}"
        # The recipes test's tiny model, tokenizer and 3 steps, the recipe's FSDP over every device; rows of
        # 1024 tokens (the shortest examples fit, one a row), for time.
        command = train_command(*common(tmp_path, tokenizer, name), "--gin_file", "train/stage1_codeio_pp.gin",
                                f"--gin.DATA_DIR='{tfrecords}'", "--gin.SeqioInput.batch_size=8",
                                "--gin.SeqioInput.length=1024")
        succeeded(run_job(command, processes, devices, tmp_path / f"logs-{name}"))
        runs[name] = metrics(tmp_path / name)
    assert_same_numbers(runs["1x8"], runs["2x4"], range(1, 4))
    assert [row["loss_tokens"] for row in runs["2x4"].values()] == [row["loss_tokens"] for row in runs["1x8"].values()]


def test_processes_that_disagree_on_the_gin_config_all_fail_with_one_message(tmp_path):
    def command(process):
        # Process 1 gets one more binding: what a host with a stale flag or gin file would parse.
        return train_command("--gin_file", "train/smoke_cpu.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                             *(["--gin.train.steps=7"] if process == 1 else []))

    done = run_job(command, 2, 4, tmp_path / "logs", timeout=180)
    errors = [[line for line in result.stderr.splitlines() if line.startswith("codeio-jax train: error:")]
              for result in done]
    assert [result.returncode for result in done] == [2, 2]
    assert len(errors[0]) == 1 and errors[0] == errors[1]
    [message] = errors[0]
    assert "parsed different gin configs" in message and "process 0" in message and "process 1" in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
