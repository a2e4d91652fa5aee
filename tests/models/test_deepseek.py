"""DeepSeek-V2 (multi-head latent attention, DeepSeekMoE, YaRN) against
transformers' DeepseekV2ForCausalLM with random weights: imported logits,
exported checkpoints, decoding with the latent cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codeio_jax.models import convert
from codeio_jax.models.decoder import Decoder, init_cache, logical_axes
from tests.models.hf_tiny import hf_logits, max_diff_on_real_tokens, padded_batch

pytest.importorskip("torch")

# V2-Lite's shape in miniature: one dense layer then MoE layers, YaRN with a
# small original context so the ramp interpolates most rotary frequencies.
BASE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=4, first_k_dense_replace=1, kv_lora_rank=32, qk_nope_head_dim=16,
            qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2,
            moe_intermediate_size=24, topk_method="greedy", norm_topk_prob=False, max_position_embeddings=64,
            rope_theta=10000.0)
YARN = dict(rope_type="yarn", factor=4.0, beta_fast=32, beta_slow=1, original_max_position_embeddings=16)
CASES = {
    # V2-Lite: no query bottleneck, mscale == mscale_all_dim (cos/sin unscaled, softmax scaled).
    "lite": dict(q_lora_rank=None, routed_scaling_factor=1.0, rope_scaling={**YARN, "mscale": 0.707,
                                                                            "mscale_all_dim": 0.707}),
    # V2's query bottleneck; mscale != mscale_all_dim scales cos/sin too; a routed scale.
    "q_lora": dict(q_lora_rank=24, routed_scaling_factor=2.5, rope_scaling={**YARN, "mscale": 1.0,
                                                                            "mscale_all_dim": 0.5}),
}
EAGER = dict(attn_implementation="eager", experts_implementation="eager")


def tiny_deepseek(case: str, folder, seed: int = 0):
    import torch
    import transformers as tr

    torch.manual_seed(seed)
    model = tr.DeepseekV2ForCausalLM(tr.DeepseekV2Config(**BASE, **CASES[case], **EAGER)).eval()
    with torch.no_grad():
        # N(0, 0.1) everywhere but the norms, N(1, 0.1): with norm weights near 0 the
        # attention scores would be near 0 too, and the softmax scale or the rotary
        # convention could be wrong without the logits showing it.
        for name, parameter in model.named_parameters():
            parameter.normal_(1.0 if "norm" in name else 0.0, 0.1)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=sorted(CASES))
def imported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    model = tiny_deepseek(request.param, folder)
    config, params = convert.load_hf(folder)
    return request.param, model, config, params


def logits_of(config, params, tokens):
    return np.asarray(Decoder(config).apply({"params": params}, jnp.asarray(tokens))[0])


def test_config_reads_mla_moe_and_yarn(imported):
    case, _, config, _ = imported
    assert config.mla.q_lora_rank == CASES[case]["q_lora_rank"] and config.head_dim == 24
    assert config.moe.first_dense_layers == 1 and config.moe.num_experts == 8
    assert config.rope.kind == "yarn" and config.rope.factor == 4.0
    mscale = 0.1 * CASES[case]["rope_scaling"]["mscale_all_dim"] * np.log(4.0) + 1.0
    assert config.query_scale == pytest.approx(24 ** -0.5 * mscale ** 2)


def test_imported_logits_match_transformers(imported):
    case, model, config, params = imported
    tokens, mask = padded_batch()
    diff = max_diff_on_real_tokens(logits_of(config, params, tokens), hf_logits(model, tokens, mask), mask)
    assert diff < 1e-4, f"{case}: {diff}"


def test_exported_checkpoint_loads_in_transformers_with_the_same_logits(imported, tmp_path):
    import transformers as tr

    case, model, config, params = imported
    convert.save_hf(tmp_path, config, params)
    reloaded = tr.AutoModelForCausalLM.from_pretrained(tmp_path, **EAGER).eval()
    assert type(reloaded).__name__ == "DeepseekV2ForCausalLM"
    tokens, mask = padded_batch(1)
    diff = max_diff_on_real_tokens(hf_logits(reloaded, tokens, mask), hf_logits(model, tokens, mask), mask)
    assert diff < 1e-5, f"{case}: {diff}"
    _, again = convert.load_hf(tmp_path)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)


def test_decoding_with_the_latent_cache_equals_the_full_forward(imported):
    case, _, config, params = imported
    tokens, mask = padded_batch(2)
    lengths = mask.sum(1)
    full = logits_of(config, params, tokens)
    model = Decoder(config)
    cache = init_cache(config, tokens.shape[0], 16)
    assert set(cache[0]) == {"latent", "k_pe"} and cache[0]["latent"].shape == (3, 16, 32)
    prefill = jnp.asarray(tokens[:, :4])
    positions = jnp.broadcast_to(jnp.arange(4)[None], (3, 4))
    logits, cache = model.apply({"params": params}, prefill, positions, None, cache)
    np.testing.assert_allclose(np.asarray(logits), full[:, :4], atol=1e-4, err_msg=case)
    step = jax.jit(lambda p, t, pos, c: model.apply({"params": p}, t, pos, None, c))
    for t in range(4, 12):
        # Rows at their own positions: the shorter rows stop at their length, the others go on.
        at = np.minimum(t, lengths - 1)
        token = jnp.asarray(tokens[np.arange(3), at][:, None])
        logits, cache = step(params, token, jnp.asarray(at[:, None]), cache)
        for b in range(3):
            if t < lengths[b]:
                np.testing.assert_allclose(np.asarray(logits[b, 0]), full[b, t], atol=1e-4, err_msg=case)


def test_every_parameter_has_logical_axis_names(imported):
    _, _, config, params = imported
    axes = logical_axes(config)
    flat_axes = dict(jax.tree_util.tree_flatten_with_path(axes, is_leaf=lambda x: x is None or
                                                          type(x).__name__ == "PartitionSpec")[0])
    flat_params = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    assert flat_axes.keys() == flat_params.keys()
    known = {"embed", "heads", "head_dim", "mlp", "vocab", "experts", "q_lora", "kv_lora"}
    for path, spec in flat_axes.items():
        assert len(spec) == flat_params[path].ndim and set(spec) <= known, path


def test_missing_experts_fail_clearly(tmp_path):
    from safetensors.numpy import load_file, save_file

    tiny_deepseek("lite", tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["model.layers.2.mlp.experts.5.up_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(convert.CheckpointError, match="layers_2/mlp/experts/up_proj has 7 of 8 experts"):
        convert.load_hf(tmp_path)
