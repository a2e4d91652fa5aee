"""`codeio-jax train --compile_only --topology NAME`: slice names, the report,
the exit status when a step does not fit, and its errors. The TPU cases compile
for slices libtpu describes on this CPU host."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codeio_jax.training import hardware

REPO = Path(__file__).resolve().parents[2]


def compile_only(*flags, env=None, timeout=600):
    command = [sys.executable, "-m", "codeio_jax.cli", "train", "--gin_file", "train/smoke_cpu.gin",
               "--compile_only", *flags]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def report_of(done):
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name,chips,dims", [("v5p-64", 32, (2, 4, 4)), ("v5p-8", 4, (2, 2, 1)),
                                             ("v4-32", 16, (2, 2, 4)), ("v5p-256", 128, (4, 4, 8)),
                                             ("v6e-256", 256, (16, 16)), ("v5e-16", 16, (4, 4)),
                                             ("v6e-8", 8, (2, 4)), ("v5e-1", 1, (1, 1)),
                                             ("v5p:4x4x12", 192, (4, 4, 12)), ("V6E:8x16", 128, (8, 16))])
def test_slice_names_give_the_cloud_tpu_torus(name, chips, dims):
    topology = hardware.parse_topology(name)
    assert (topology.chips, topology.dims) == (chips, dims)


@pytest.mark.parametrize("name,says", [("v7-8", "known: v4-8"), ("v5p-63", "TensorCores"),
                                       ("v6e-12", "give its torus (e.g. v6e:8x16)"),
                                       ("v5p:4x4", "3 dimensions"), ("cpu:0", "N >= 1")])
def test_bad_slice_names_say_what_is_known(name, says):
    with pytest.raises(hardware.TopologyError, match=None) as caught:
        hardware.parse_topology(name)
    assert says in str(caught.value)


def test_the_device_kinds_jax_reports_find_their_chip():
    assert hardware.chip_for_device_kind("TPU v5").name == "v5p"
    assert hardware.chip_for_device_kind("TPU v5 lite").name == "v5e"
    assert hardware.chip_for_device_kind("TPU v6 lite").name == "v6e"
    assert hardware.chip_for_device_kind("NVIDIA H100 80GB HBM3").peak_bf16_flops == 989e12
    assert hardware.chip_for_device_kind("cpu") is None


def test_cpu_devices_report_the_step_as_train_builds_it(tmp_path):
    out = tmp_path / "report.json"
    done = compile_only("--topology", "cpu:4", "--gin.train.mesh=@MeshConfig()", "--gin.MeshConfig.fsdp=2",
                        "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = report_of(done)
    assert report == json.loads(out.read_text())
    assert report["chips"] == 4 and report["mesh"] == {"data": 2, "fsdp": 2, "experts": 1, "tensor": 1}
    assert (report["batch_size"], report["length"]) == (8, 128)  # smoke_cpu.gin's SyntheticInput
    per_chip = report["per_chip_bytes"]
    # tiny_llama: 0.14 M float32 parameters and two Adam slots, the kernels halved by fsdp 2.
    assert 0.3e6 < per_chip["arguments"] < 1.8e6
    assert per_chip["total"] == (per_chip["arguments"] + per_chip["outputs"] - per_chip["aliased"]
                                 + per_chip["temporaries"] + per_chip["generated_code"])
    assert report["fits"] and report["estimated_step_s"] is None  # XLA's CPU backend gives no estimate
    assert 0.8 < report["xla_flops_per_step"] / report["model_flops_per_step"] < 1.3
    assert "per chip: total" in done.stdout


def test_remat_saves_memory_on_a_cpu_host_unless_xla_flags_choose_the_concurrency_scheduler():
    def total(remat, env=None):
        done = compile_only("--topology", "cpu:1", f"--gin.train.remat='{remat}'",
                            "--gin.SyntheticInput.length=512", env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return report_of(done)["per_chip_bytes"]["total"]

    # 8 x 512 on the tiny Llama: its activations outweigh its parameters. XLA:CPU's default
    # scheduler runs every layer's recomputation early, and full remat then saves nothing.
    none, full = total("none"), total("full")
    assert full < 0.9 * none, (full, none)
    concurrency = total("full", env={"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"})
    assert concurrency > 0.95 * none, (concurrency, none)  # a user's own choice in XLA_FLAGS wins


def test_a_cpu_step_that_cannot_fit_names_scanned_layers_until_they_are_on():
    # 4096 rows of 1024 tokens on one CPU device: far more than this host's memory.
    big = ("--topology", "cpu:1", "--gin.SyntheticInput.batch_size=4096", "--gin.SyntheticInput.length=1024",
           "--gin.train.remat='full'")
    done = compile_only(*big)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "train.scan_layers = True" in report_of(done)["advice"]
    done = compile_only(*big, "--gin.train.scan_layers=True")
    assert done.returncode == 3, done.stderr[-3000:]
    report = report_of(done)
    assert report["settings"]["scan_layers"] is True and "scan_layers" not in report["advice"]


@pytest.mark.slow
def test_a_tpu_slice_compiles_and_a_step_that_cannot_fit_exits_3_saying_what_to_change():
    done = compile_only("--topology", "v5p-8")
    assert done.returncode == 0, done.stderr[-3000:]
    report = report_of(done)
    assert report["device_kind"] == "TPU v5" and report["chips"] == 4
    assert report["hbm_bytes"] == 95 * 10**9 and report["estimated_step_s"] > 0
    assert "estimate" in done.stdout
    # 4096 rows of 2048 tokens, no remat: the activations alone are hundreds of GiB per chip.
    done = compile_only("--topology", "v5e-4", "--gin.SyntheticInput.batch_size=4096",
                        "--gin.SyntheticInput.length=2048")
    assert done.returncode == 3, done.stderr[-3000:]
    report = report_of(done)
    assert not report["fits"] and report["per_chip_bytes"]["total"] > report["hbm_bytes"]
    assert "temporaries" in report["advice"] and "remat" in report["advice"]
    assert "does not fit" in done.stdout


def test_a_mesh_that_does_not_divide_the_slice_names_the_axis():
    done = compile_only("--topology", "cpu:4", "--gin.train.mesh=@MeshConfig()", "--gin.MeshConfig.data=1",
                        "--gin.MeshConfig.fsdp=3")
    assert done.returncode == 2
    assert "mesh axis fsdp = 3 does not divide the 4 devices" in done.stderr


def test_unknown_topologies_and_missing_flags_are_clear():
    done = compile_only("--topology", "v9-8")
    assert done.returncode == 2 and "known:" in done.stderr
    done = compile_only()
    assert done.returncode == 2 and "--topology" in done.stderr


def test_without_libtpu_the_command_says_how_to_install_it(tmp_path):
    shadow = tmp_path / "libtpu"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('libtpu is not installed')\n")
    done = compile_only("--topology", "v5p-8", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2 and "codeio-jax[tpu]" in done.stderr


def test_a_host_with_libtpu_and_no_tpu_starts_jax_on_cpu_without_the_probe_errors():
    environ = {}
    assert hardware.skip_tpu_probe_without_a_tpu(environ) and environ == {"JAX_PLATFORMS": "cpu"}
    for chosen in ({"JAX_PLATFORMS": "tpu"}, {"TPU_ACCELERATOR_TYPE": "v5p-8"}):  # the user's choice stands
        assert not hardware.skip_tpu_probe_without_a_tpu(dict(chosen))
    # As the commands start: the choice first, then jax.
    # A fresh shell's: earlier tests of this process quiet libtpu themselves (TPU_* set for compiling).
    env = {name: value for name, value in os.environ.items() if name != "JAX_PLATFORMS" and not name.startswith("TPU_")}
    probe = ("from codeio_jax.training.hardware import skip_tpu_probe_without_a_tpu as skip\n"
             "skip()\nimport jax\nprint(jax.devices()[0].platform)\n")
    quiet = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert quiet.stdout.strip() == "cpu" and "TPU_WORKER_HOSTNAMES" not in quiet.stderr, quiet.stderr[-2000:]
    noisy = subprocess.run([sys.executable, "-c", probe.replace("skip()\n", "")], capture_output=True, text=True,
                           env=env, timeout=120)
    assert "TPU_WORKER_HOSTNAMES" in noisy.stderr  # what it spares a user on this host
