"""LoRA adapters (models/lora.py): a fresh adapter changes nothing; a trained one
equals its merge into the base; the step's gradient is the full model's gradient
projected onto the adapters; the scanned layers adapt as the unrolled ones; the
PEFT export is what `peft` loads onto the transformers model, with our logits;
bad targets and bases of another shape are refused with the reason."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codeio_jax.models import lora
from codeio_jax.models.config import LoraConfig
from codeio_jax.models.decoder import Decoder
from codeio_jax.models.presets import preset
from tests.models.test_moe import tiny_params

ALL = LoraConfig(targets=("all-linear",), rank=4, alpha=8.0)


def trained_adapters(config, seed=3):
    """Adapters as after training: A as initialised, B no longer zero."""
    adapters = nn.meta.unbox(lora.init_adapters(config, jax.random.PRNGKey(seed)))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), len(jax.tree.leaves(adapters))))
    return jax.tree.map(lambda x: x + 0.05 * jax.random.normal(next(keys), x.shape), adapters)


def tokens_for(config, shape=(2, 10)):
    return jax.random.randint(jax.random.PRNGKey(1), shape, 0, config.vocab_size)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma2", "tiny_deepseek_v2"])
def test_fresh_adapters_change_nothing_and_trained_ones_equal_their_merge(name):
    base = preset(name).replace(num_layers=3)
    config = base.replace(lora=ALL)
    params, tokens = tiny_params(base), tokens_for(base)
    plain = Decoder(base).apply({"params": params}, tokens)[0]
    fresh = nn.meta.unbox(lora.init_adapters(config, jax.random.PRNGKey(0)))
    assert jnp.array_equal(Decoder(config).apply({"params": params, "lora": fresh}, tokens)[0], plain)
    adapters = trained_adapters(config)
    adapted = Decoder(config).apply({"params": params, "lora": adapters}, tokens)[0]
    assert float(jnp.abs(adapted - plain).max()) > 1e-2  # the adapters do something
    merged = Decoder(base).apply({"params": lora.merge(config, params, adapters)}, tokens)[0]
    np.testing.assert_allclose(merged, adapted, atol=5e-5 * float(jnp.abs(plain).max()))
    scanned = Decoder(config.replace(scan_layers=True, remat="full")).apply(
        {"params": params, "lora": adapters}, tokens)[0]
    np.testing.assert_allclose(scanned, adapted, atol=1e-5 * float(jnp.abs(plain).max()))


def test_targets_choose_the_projections():
    base = preset("tiny_llama").replace(num_layers=2)
    adapters = lora.init_adapters(base.replace(lora=LoraConfig(targets=("q_proj", "down_proj"))),
                                  jax.random.PRNGKey(0))
    layer = nn.meta.unbox(adapters)["layers_1"]
    assert set(layer) == {"self_attn", "mlp"} and set(layer["self_attn"]) == {"q_proj"}
    assert set(layer["mlp"]) == {"down_proj"}
    assert layer["self_attn"]["q_proj"]["lora_a"].shape == (base.hidden_size, 8)
    assert layer["self_attn"]["q_proj"]["lora_b"].shape == (8, base.num_heads, base.head_dim)
    assert not jnp.any(layer["mlp"]["down_proj"]["lora_b"])  # B starts at zero
    # The adapters are sharded by the kernel's own axes: A by its inputs, B by its outputs.
    specs = nn.get_partition_spec(adapters)["layers_1"]["self_attn"]["q_proj"]
    assert tuple(specs["lora_a"]) == ("embed", None) and tuple(specs["lora_b"]) == (None, "heads", "head_dim")


def test_a_target_that_matches_nothing_names_the_projections_that_exist():
    base = preset("tiny_deepseek_v2").replace(num_layers=2)
    with pytest.raises(lora.AdapterError) as error:
        lora.init_adapters(base.replace(lora=LoraConfig(targets=("q_proj", "wq"))), jax.random.PRNGKey(0))
    message = str(error.value)
    assert "wq matches no projection" in message and "kv_a_proj_with_mqa" in message and "'all-linear'" in message


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="rank must be at least 1"):
        LoraConfig(rank=0)
    with pytest.raises(ValueError, match="dropout"):
        LoraConfig(dropout=1.0)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_deepseek_v2"])
def test_the_lora_gradient_is_the_full_gradient_projected_onto_the_adapters(name):
    """For W' = W + s A B: dL/dA = s G B^T and dL/dB = s A^T G, with G = dL/dW' the
    full model's gradient at the merged weights."""
    from codeio_jax.training.step import loss_fn

    base = preset(name).replace(num_layers=2, dtype="float32")
    config = base.replace(lora=ALL)
    params, adapters = tiny_params(base), trained_adapters(config)
    tokens = tokens_for(base, (2, 12))
    batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": jnp.roll(tokens, -1, axis=1),
             "decoder_loss_weights": jnp.ones_like(tokens), "decoder_segment_ids": jnp.ones_like(tokens),
             "decoder_positions": jnp.broadcast_to(jnp.arange(12), tokens.shape)}
    grad = jax.grad(lambda p, *a: loss_fn(p, *a)[0])
    lora_grads = grad(adapters, Decoder(config), batch, 0.0, 0, params)
    full_grads = grad(lora.merge(config, params, adapters), Decoder(base), batch, 0.0, 0)
    checked = 0
    for module, pair in lora._modules(adapters).items():
        g = full_grads
        for part in module.split("/"):
            g = g[part]
        g = g["kernel"]
        a, b = pair["lora_a"], pair["lora_b"]
        ins = a.ndim - 1
        expect_a = ALL.scale * jnp.tensordot(g, b, axes=(list(range(ins, g.ndim)), list(range(1, b.ndim))))
        expect_b = ALL.scale * jnp.tensordot(a, g, axes=(list(range(ins)), list(range(ins))))
        got = lora_grads
        for part in module.split("/"):
            got = got[part]
        for key, expect in (("lora_a", expect_a), ("lora_b", expect_b)):
            scale = float(jnp.abs(expect).max())
            assert scale > 0, module
            np.testing.assert_allclose(got[key], expect, atol=1e-4 * scale, err_msg=f"{module}/{key}")
        checked += 1
    assert checked >= 10


def test_dropout_draws_from_its_rng_and_scoring_runs_without_it():
    base = preset("tiny_llama").replace(num_layers=2)
    config = base.replace(lora=LoraConfig(rank=4, dropout=0.5))
    params, adapters, tokens = tiny_params(base), trained_adapters(config), tokens_for(base)
    model = Decoder(config)
    variables = {"params": params, "lora": adapters}

    def run(seed):
        return model.apply(variables, tokens, rngs={"lora_dropout": jax.random.PRNGKey(seed)})[0]

    assert jnp.array_equal(run(0), run(0)) and not jnp.array_equal(run(0), run(1))
    without = model.apply(variables, tokens)[0]  # no rng: no dropout (evaluation, sampling)
    assert not jnp.array_equal(without, run(0))
    merged = Decoder(base).apply({"params": lora.merge(config, params, adapters)}, tokens)[0]
    np.testing.assert_allclose(without, merged, atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_peft_loads_our_export_onto_the_transformers_model_with_our_logits(tmp_path, family):
    from peft import PeftModel

    from codeio_jax.models.convert import load_hf
    from tests.models.hf_tiny import hf_logits, max_diff_on_real_tokens, padded_batch, tiny_model

    hf_model = tiny_model(family, tmp_path / "hf")
    base, params = load_hf(tmp_path / "hf")
    config = base.replace(lora=LoraConfig(targets=("all-linear",), rank=4, alpha=16.0))
    adapters = trained_adapters(config)
    lora.save_peft(tmp_path / "adapter", config, adapters, base_model=str(tmp_path / "hf"))
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 4 and saved["lora_alpha"] == 16.0 and "gate_proj" in saved["target_modules"]

    peft_model = PeftModel.from_pretrained(hf_model, tmp_path / "adapter").eval()
    tokens, mask = padded_batch()
    reference = hf_logits(peft_model, tokens, mask)
    ours = np.asarray(Decoder(config).apply({"params": params, "lora": adapters}, jnp.asarray(tokens))[0])
    assert max_diff_on_real_tokens(ours, reference, mask) < 1e-4
    with peft_model.disable_adapter():
        untouched = hf_logits(peft_model, tokens, mask)
    assert max_diff_on_real_tokens(untouched, reference, mask) > 1e-2  # the adapters were really applied

    # And back: the folder reads as the adapters it was written from.
    loaded_config, loaded = lora.load_peft(tmp_path / "adapter", base)
    got = loaded_config.lora
    assert (got.rank, got.alpha, got.dropout) == (4, 16.0, 0.0)
    assert set(got.targets) == set(lora.adaptable_projections(base))  # "all-linear", spelt out
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), loaded, adapters)


def test_an_adapter_for_another_base_shape_says_so(tmp_path):
    base = preset("tiny_llama").replace(num_layers=2)
    config = base.replace(lora=LoraConfig(rank=4))
    lora.save_peft(tmp_path / "adapter", config, trained_adapters(config))
    wider = base.replace(hidden_size=base.hidden_size * 2)
    with pytest.raises(lora.AdapterError, match="made for a base of another shape"):
        lora.load_peft(tmp_path / "adapter", wider)
    with pytest.raises(lora.AdapterError, match="made for a base of another shape"):
        lora.merge(config, tiny_params(wider), trained_adapters(config))
    with pytest.raises(lora.AdapterError, match="not a PEFT adapter folder"):
        lora.load_peft(tmp_path, base)
