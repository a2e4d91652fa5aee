"""The trainer: sharded layouts give the single-device numbers, kill -9 and
resume gives the uninterrupted losses bit for bit, gin errors are clear."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_devices import run_on_cpu_devices

REPO = Path(__file__).resolve().parents[2]

LAYOUTS = """
import json, os, sys
sys.path.insert(0, {repo!r})
import jax
from codeio_jax.models.presets import preset
from codeio_jax.training.input import SyntheticInput
from codeio_jax.training.optimizer import OptimizerConfig
from codeio_jax.training.partitioning import MeshConfig
from codeio_jax.training.trainer import train

assert jax.device_count() == 8, jax.devices()
config = preset("tiny_llama").replace(num_heads=8, num_kv_heads=4, head_dim=8)
losses = {{}}
for name, mesh in (("single", MeshConfig(data=1)), ("data", MeshConfig(data=8)), ("fsdp", MeshConfig(data=1, fsdp=8)),
                   ("tensor", MeshConfig(data=2, fsdp=2, tensor=2)), ("fsdp+tensor", MeshConfig(data=1, fsdp=4, tensor=2)),
                   ("fsdp+tensor, scanned layers", MeshConfig(data=1, fsdp=4, tensor=2))):
    devices = jax.devices()[:1] if name == "single" else None
    rows = []
    if devices:  # one device: a mesh over the first only
        import codeio_jax.training.partitioning as p
        original = p.make_mesh
        p.make_mesh = lambda cfg, devices=None: original(cfg, jax.devices()[:1])
    train(model_dir=os.path.join({tmp!r}, name), model=config, steps=4, log_every=1, compute_dtype="float32",
          inputs=SyntheticInput(config.vocab_size, length=32, batch_size=8), mesh=mesh,
          optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=1), checkpoint_every=0,
          on_log=lambda row: rows.append(row["loss"]),
          **(dict(scan_layers=True, remat="full") if "scanned" in name else {{}}))
    if devices:
        p.make_mesh = original
    losses[name] = rows
print(json.dumps(losses))
"""


def test_fsdp_and_tensor_parallel_layouts_give_the_single_device_numbers(tmp_path):
    losses = run_on_cpu_devices(LAYOUTS.format(repo=str(REPO), tmp=str(tmp_path)), 8)
    single = losses.pop("single")
    assert len(single) == 4 and len(set(single)) == 4  # the updates change the loss
    for name, rows in losses.items():
        assert rows == pytest.approx(single, rel=2e-5), name


def run_smoke(model_dir, steps, **popen):
    command = [sys.executable, "-m", "codeio_jax.cli", "train", "--gin_file", "train/smoke_cpu.gin",
               f"--gin.MODEL_DIR='{model_dir}'", f"--gin.train.steps={steps}", "--gin.train.log_every=1",
               "--gin.train.checkpoint_every=4", "--gin.train.async_checkpoints=False"]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)


def losses(model_dir):
    rows = [json.loads(line) for line in (Path(model_dir) / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}


@pytest.mark.slow
def test_kill_9_and_resume_gives_the_uninterrupted_losses_bit_for_bit(tmp_path):
    reference = tmp_path / "reference"
    assert run_smoke(reference, 24).wait(timeout=600) == 0
    expected = losses(reference)
    assert sorted(expected) == list(range(1, 25))
    killed = tmp_path / "killed"
    process = run_smoke(killed, 24)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once step 10 is logged: checkpoints 4 and 8 exist
        if (killed / "metrics.jsonl").exists() and len((killed / "metrics.jsonl").read_text().splitlines()) >= 10:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    seen = losses(killed)
    assert 10 <= max(seen) < 24, "the kill landed mid-run"
    assert run_smoke(killed, 24).wait(timeout=600) == 0
    resumed = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    # The resumed run logs again from its checkpoint on; every loss it logs is the reference's, exactly.
    restart = next(i for i in range(1, len(resumed)) if resumed[i]["step"] <= resumed[i - 1]["step"])
    after = resumed[restart:]
    assert after[0]["step"] <= 9 and after[-1]["step"] == 24
    for row in after:
        assert row["loss"] == expected[row["step"]], row["step"]


def test_gin_typos_fail_at_once_with_the_name(tmp_path):
    done = subprocess.run([sys.executable, "-m", "codeio_jax.cli", "train", "--gin_file", "train/smoke_cpu.gin",
                           "--gin.train.stepz=3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "stepz" in done.stderr


def test_flops_per_token_is_six_times_the_matmul_parameters_for_short_sequences():
    from codeio_jax.models.presets import preset
    from codeio_jax.training.step import flops_per_token

    config = preset("llama3_1_8b")
    # 8.03e9 parameters, of which the input embedding (0.53e9) is a lookup, not a matmul.
    assert flops_per_token(config, 1) == pytest.approx(6 * (8.03e9 - 0.525e9), rel=0.01)
    attention = 12 * 32 * 4096 * 32 * 128  # scores and values, forward and backward, at length 4096
    assert flops_per_token(config, 4096) - flops_per_token(config, 0) == pytest.approx(attention)


def test_gradient_accumulation_equals_the_big_batch():
    import functools

    import jax
    import numpy as np

    from codeio_jax.models.decoder import Decoder
    from codeio_jax.models.presets import preset
    from codeio_jax.training.input import SyntheticInput
    from codeio_jax.training.optimizer import OptimizerConfig, make_optimizer
    from codeio_jax.training.step import init_state, train_step

    config = preset("tiny_llama")
    batch = next(SyntheticInput(config.vocab_size, length=16, batch_size=8))
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]

    def run(accumulation, batches):
        tx, schedule = make_optimizer(OptimizerConfig(learning_rate=1e-2, warmup_steps=0,
                                                      accumulation_steps=accumulation), 10)
        state = init_state(config, tx, 0)
        step = jax.jit(functools.partial(train_step, model=Decoder(config), optimizer=tx, schedule=schedule))
        for b in batches:
            state, _ = step(state, b)
        return state.params

    whole, accumulated = run(1, [batch]), run(2, halves)
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
    initial = flat(run(2, halves[:1]))  # one micro-batch: no update yet
    assert not np.allclose(flat(whole), initial)
    np.testing.assert_allclose(flat(accumulated), flat(whole), atol=1e-5)
