"""`train` with LoRA: the adapters alone are trained, checkpointed and given
optimizer state; the base is read from init_from and never changes; a resumed
run continues bit for bit; the run folder loads as the merged model and exports
to a Hugging Face folder and to PEFT."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from codeio_jax.models import checkpoint, lora
from codeio_jax.models.config import LoraConfig
from codeio_jax.models.decoder import Decoder, init_params
from codeio_jax.models.presets import preset
from codeio_jax.training.input import SyntheticInput
from codeio_jax.training.optimizer import OptimizerConfig
from codeio_jax.training.trainer import train

ADAPTERS = LoraConfig(targets=("q_proj", "v_proj", "down_proj"), rank=4, alpha=8.0)


@pytest.fixture
def base_model(tmp_path):
    import flax.linen as nn

    config = preset("tiny_llama").replace(num_layers=2)
    params = nn.meta.unbox(init_params(config, jax.random.PRNGKey(5)))
    return checkpoint.save(tmp_path / "base", config, params), config, params


def run(model_dir, base_folder, config, steps, **extra):
    rows = []
    optimizer = OptimizerConfig(learning_rate=5e-3, warmup_steps=1, schedule="constant")
    report = train(model_dir=model_dir, model=config, steps=steps, log_every=1, compute_dtype="float32",
                   inputs=SyntheticInput(config.vocab_size, length=16, batch_size=4), optimizer=optimizer,
                   checkpoint_every=2, async_checkpoints=False, init_from=base_folder, lora=ADAPTERS,
                   on_log=lambda row: rows.append(row["loss"]), **extra)
    return report, rows


def test_lora_training_keeps_the_base_and_checkpoints_only_the_adapters(tmp_path, base_model):
    base_folder, config, base_params = base_model
    report, losses = run(tmp_path / "run", base_folder, config, 6)
    assert report.config.lora == ADAPTERS
    assert losses[-1] < losses[0]  # the adapters learn

    state = ocp.StandardCheckpointer().restore(tmp_path / "run" / "checkpoints" / "6" / "state")
    names = {path[-1].key for path, _ in jax.tree_util.tree_flatten_with_path(state["params"])[0]}
    assert names == {"lora_a", "lora_b"}  # no base weights in the checkpoint
    # And no optimizer state for the base: Adam's two moments of the adapters, and counters.
    adapter_size = sum(np.size(x) for x in jax.tree.leaves(state["params"]))
    slot_size = sum(np.size(x) for x in jax.tree.leaves(state["opt_state"]) if np.ndim(x) > 0)
    assert slot_size == 2 * adapter_size
    assert adapter_size < sum(np.size(x) for x in jax.tree.leaves(base_params)) / 20
    assert json.loads((tmp_path / "run" / lora.BASE_REFERENCE).read_text())["init_from"] == str(base_folder)

    # The run loads as the merged model; the base folder itself is untouched.
    merged_config, merged = checkpoint.load(tmp_path / "run")
    assert merged_config.lora is None
    lora_config, adapters, base_ref = checkpoint.load_adapters(tmp_path / "run")
    assert base_ref == base_folder
    _, reread_base = checkpoint.load(base_folder)
    jax.tree.map(np.testing.assert_array_equal, reread_base, base_params)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 9), 0, config.vocab_size)
    adapted = Decoder(lora_config).apply({"params": base_params, "lora": adapters}, tokens)[0]
    plain = Decoder(merged_config).apply({"params": merged}, tokens)[0]
    np.testing.assert_allclose(plain, adapted, atol=1e-5)
    assert float(jnp.abs(adapted - Decoder(config).apply({"params": base_params}, tokens)[0]).max()) > 1e-4


def test_a_resumed_lora_run_gives_the_uninterrupted_losses(tmp_path, base_model):
    base_folder, config, _ = base_model
    _, expected = run(tmp_path / "whole", base_folder, config, 6)
    run(tmp_path / "halves", base_folder, config, 4)
    report, rest = run(tmp_path / "halves", base_folder, config, 6)
    assert report.start_step == 4 and rest == expected[4:]


def test_lora_needs_a_base_and_resumes_over_the_same_one(tmp_path, base_model):
    base_folder, config, params = base_model
    with pytest.raises(ValueError, match="LoRA adapts a pretrained model"):
        run(tmp_path / "run", None, config, 2)
    run(tmp_path / "run", base_folder, config, 2)
    other = checkpoint.save(tmp_path / "other", config, params)
    with pytest.raises(ValueError, match="resumes over the base it started from"):
        run(tmp_path / "run", other, config, 4)


@pytest.mark.slow
def test_an_hf_model_through_lora_training_to_peft_and_to_a_merged_hf_folder(tmp_path):
    """As a user runs it: convert an HF model, train adapters with the gin recipe,
    export them to PEFT and the merged model to HF; transformers + peft and the
    merged folder then give the same logits, which are not the base's."""
    import transformers as tr
    from peft import PeftModel

    from tests.models.hf_tiny import hf_logits, max_diff_on_real_tokens, padded_batch, tiny_model
    from tests.test_cli import cli

    base = tiny_model("llama", tmp_path / "hf")
    assert cli("convert", "hf-to-jax", "--in", tmp_path / "hf", "--out", tmp_path / "base").returncode == 0
    done = cli("train", "--gin_file", "train/smoke_cpu.gin", "--gin_file", "train/lora.gin",
               "--gin.train.model=None",  # the architecture of INIT_FROM
               f"--gin.INIT_FROM='{tmp_path / 'base'}'", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
               "--gin.SyntheticInput.vocab_size=128", "--gin.SyntheticInput.length=16", "--gin.train.steps=4",
               "--gin.LoraConfig.rank=4", "--gin.OptimizerConfig.learning_rate=1e-2", timeout=300)
    assert done.returncode == 0, done.stderr
    done = cli("convert", "jax-to-peft", "--in", tmp_path / "run", "--out", tmp_path / "adapter")
    assert done.returncode == 0, done.stderr
    assert "rank 4, alpha 32" in done.stdout
    done = cli("convert", "jax-to-hf", "--in", tmp_path / "run", "--out", tmp_path / "merged", timeout=300)
    assert done.returncode == 0, done.stderr

    tokens, mask = padded_batch()
    before = hf_logits(base, tokens, mask)
    adapted = hf_logits(PeftModel.from_pretrained(base, tmp_path / "adapter").eval(), tokens, mask)
    merged = hf_logits(tr.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval(), tokens, mask)
    assert max_diff_on_real_tokens(merged, adapted, mask) < 1e-4
    assert max_diff_on_real_tokens(adapted, before, mask) > 1e-3  # the training moved it

    again = cli("convert", "jax-to-peft", "--in", tmp_path / "base", "--out", tmp_path / "x")
    assert again.returncode == 2 and "not a training run with LoRA adapters" in again.stderr


SHARDED = """
import json, os, sys
sys.path.insert(0, {repo!r})
import jax
import flax.linen as nn
from codeio_jax.models import checkpoint
from codeio_jax.models.config import LoraConfig
from codeio_jax.models.decoder import init_params
from codeio_jax.models.presets import preset
from codeio_jax.training.input import SyntheticInput
from codeio_jax.training.optimizer import OptimizerConfig
from codeio_jax.training.partitioning import MeshConfig
from codeio_jax.training.trainer import build_step, train

config = preset("tiny_llama").replace(num_heads=8, num_kv_heads=4, head_dim=8, num_layers=2)
base = checkpoint.save(os.path.join({tmp!r}, "base"), config, nn.meta.unbox(init_params(config, jax.random.PRNGKey(5))))
lora = LoraConfig(targets=("all-linear",), rank=4, alpha=8.0)
losses, placed = {{}}, {{}}
for name, mesh in (("data", MeshConfig(data=8)), ("fsdp+tensor", MeshConfig(data=1, fsdp=4, tensor=2))):
    rows = []
    train(model_dir=os.path.join({tmp!r}, name), steps=3, log_every=1, compute_dtype="float32",
          inputs=SyntheticInput(config.vocab_size, length=32, batch_size=8), mesh=mesh, init_from=base, lora=lora,
          optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=1), checkpoint_every=0,
          on_log=lambda row: rows.append(row["loss"]))
    losses[name] = rows
    setup = build_step(config, mesh, OptimizerConfig(), 3, lora=lora)
    q = setup.state_shardings.params["layers_0"]["self_attn"]["q_proj"]
    base_q = setup.frozen_shardings["layers_0"]["self_attn"]["q_proj"]["kernel"]
    placed[name] = [str(q["lora_a"].spec), str(q["lora_b"].spec), str(base_q.spec)]
print(json.dumps({{"losses": losses, "placed": placed}}))
"""


def test_lora_on_a_sharded_mesh_gives_the_data_parallel_numbers(tmp_path):
    """Adapters and base placed by the logical rules on fsdp x tensor: the same losses
    as plain data parallelism, and the adapters really split like their kernels."""
    from pathlib import Path

    from tests.fake_devices import run_on_cpu_devices

    repo = Path(__file__).resolve().parents[2]
    result = run_on_cpu_devices(SHARDED.format(repo=str(repo), tmp=str(tmp_path)), 8)
    losses = result["losses"]
    assert len(set(losses["data"])) == 3
    assert losses["fsdp+tensor"] == pytest.approx(losses["data"], rel=2e-5)
    lora_a, lora_b, base_q = result["placed"]["fsdp+tensor"]
    assert "fsdp" in lora_a and "tensor" in lora_b and "fsdp" in base_q and "tensor" in base_q
