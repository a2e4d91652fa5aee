"""DeepSeek-V2's multi-head latent attention (MLA); its DeepSeekMoE is in moe.py.

Both follow transformers' modeling_deepseek_v2.py (itself DeepSeek's reference)
and keep Hugging Face's parameter names, so `HF_RULES` is a plain renaming:

    MLA:  q = q_proj(x)  or  q_b_proj(q_a_layernorm(q_a_proj(x)))      [heads, nope + rope]
          latent, k_pe = kv_a_proj_with_mqa(x)                          [kv_lora], [rope] (one for all heads)
          k_nope, v = kv_b_proj(kv_a_layernorm(latent))                 [heads, nope], [heads, v]
          RoPE (interleaved pairs) on q's rope part and k_pe; out = o_proj(attention)
    MoE:  shared_experts(x) + sum over the top-k experts of weight * expert(x)

The cache holds the compressed latent and the rotated k_pe (kv_lora + rope
values a token and layer: 576 for V2-Lite, against 16 heads x (192 + 128) = 5120
for per-head keys and values):
decoding attends in the latent space with kv_b_proj absorbed into the query and
the output, which is the same product in another order.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codeio_jax.models.config import ModelConfig
from codeio_jax.models.attention import attention_mask, parameter_free_impl, self_attention, xla_attention
from codeio_jax.models.layers import Projection, RMSNorm, Weight, inverse_frequencies, rotary, write_cache

Array = jax.Array

# DeepSeek's q_a_layernorm and kv_a_layernorm are built without the config's
# rms_norm_eps (DeepseekV2RMSNorm(rank)), so they keep the class default.
LATENT_NORM_EPS = 1e-6

_L = r"model\.layers\.(\d+)\."
# Hugging Face name -> our path, layout (see convert.to_ours). Experts are saved
# one tensor per expert (transformers un-fuses its 3-D experts on save, and the
# hub checkpoints are written that way); convert stacks them on import.
HF_RULES: list[tuple[str, str, str]] = [
    (_L + r"self_attn\.(q_proj|q_b_proj)\.weight", "layers_{0}/self_attn/{1}/kernel", "in_heads"),
    (_L + r"self_attn\.(q_a_proj|kv_a_proj_with_mqa)\.weight", "layers_{0}/self_attn/{1}/kernel", "transpose"),
    (_L + r"self_attn\.(q_a_layernorm|kv_a_layernorm)\.weight", "layers_{0}/self_attn/{1}/weight", "copy"),
    (_L + r"self_attn\.kv_b_proj\.weight", "layers_{0}/self_attn/kv_b_proj/kernel", "in_heads_any"),
    (_L + r"self_attn\.o_proj\.weight", "layers_{0}/self_attn/o_proj/kernel", "heads_out"),
    (_L + r"mlp\.(gate|up|down)_proj\.weight", "layers_{0}/mlp/{1}_proj/kernel", "transpose"),
    (_L + r"mlp\.shared_experts\.(gate|up|down)_proj\.weight", "layers_{0}/mlp/shared_experts/{1}_proj/kernel",
     "transpose"),
    (_L + r"mlp\.gate\.weight", "layers_{0}/mlp/gate/kernel", "transpose"),
    (_L + r"mlp\.experts\.(\d+)\.gate_proj\.weight", "layers_{0}/mlp/experts/gate_proj", "per_expert_transpose"),
    (_L + r"mlp\.experts\.(\d+)\.up_proj\.weight", "layers_{0}/mlp/experts/up_proj", "per_expert_transpose"),
    (_L + r"mlp\.experts\.(\d+)\.down_proj\.weight", "layers_{0}/mlp/experts/down_proj", "per_expert_transpose"),
]


class MLAttention(nn.Module):
    """Multi-head latent attention; same contract as layers.Attention."""

    config: ModelConfig
    layer: int

    @nn.compact
    def __call__(self, x: Array, positions: Array, segments: Array | None, cache: dict | None):
        cfg, mla = self.config, self.config.mla
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        heads, nope, rope, rank = cfg.num_heads, mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.kv_lora_rank

        def dense(name, features, names, inputs):
            features = features if isinstance(features, tuple) else (features,)
            return Projection(features, names, dtype=dtype, param_dtype=pdtype, lora=cfg.lora, name=name)(inputs)

        def norm(name, inputs):
            return RMSNorm(LATENT_NORM_EPS, False, dtype, pdtype, name=name)(inputs)

        if mla.q_lora_rank is None:
            q = dense("q_proj", (heads, nope + rope), ("embed", "heads", "head_dim"), x)
        else:
            q = norm("q_a_layernorm", dense("q_a_proj", mla.q_lora_rank, ("embed", "q_lora"), x))
            q = dense("q_b_proj", (heads, nope + rope), ("q_lora", "heads", "head_dim"), q)
        compressed = dense("kv_a_proj_with_mqa", rank + rope, ("embed", "kv_lora"), x)
        latent = norm("kv_a_layernorm", compressed[..., :rank])
        k_pe = compressed[..., None, rank:]  # [b, t, 1, rope]: one rotary key shared by every head
        # DeepSeek rotates complex pairs (2i, 2i + 1) with YaRN frequencies over the rope dims only;
        # YaRN's cos/sin factor is mscale / mscale_all_dim, the rest of its scale is in query_scale.
        inv_freq, factor = inverse_frequencies(cfg.rope, rope)
        q_nope = q[..., :nope]
        q_pe = rotary(q[..., nope:], positions, inv_freq, factor, interleaved=True)
        k_pe = rotary(k_pe, positions, inv_freq, factor, interleaved=True)
        kv_b = Weight((rank, heads, nope + mla.v_head_dim), ("kv_lora", "heads", "head_dim"), pdtype,
                      name="kv_b_proj")().astype(dtype)
        if cache is None:
            impl = parameter_free_impl(self, cfg.attention_impl)
            out = _attend_expanded(cfg, q_nope, q_pe, latent, k_pe, kv_b, positions, segments, impl)
        else:
            out, cache = _attend_latent(cfg, q_nope, q_pe, latent, k_pe, kv_b, positions, cache)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "head_dim"))
        out = Projection((cfg.hidden_size,), ("heads", "head_dim", "embed"), contract=2, dtype=dtype,
                         param_dtype=pdtype, lora=cfg.lora, name="o_proj")(out)
        return out, cache


def _attend_expanded(cfg: ModelConfig, q_nope: Array, q_pe: Array, latent: Array, k_pe: Array, kv_b: Array,
                     positions: Array, segments: Array | None, impl: str) -> Array:
    """Training and uncached forward: expand the latent into per-head keys and
    values (as transformers does) and attend by `impl`;
    cheapest when every position queries."""
    nope = cfg.mla.qk_nope_head_dim
    kv = jnp.einsum("bsr,rhd->bshd", latent, kv_b)
    k_pe = jnp.broadcast_to(k_pe, (*kv.shape[:3], k_pe.shape[-1]))
    q = nn.with_logical_constraint(jnp.concatenate([q_nope, q_pe.astype(q_nope.dtype)], -1),
                                   ("batch", "length", "heads", "head_dim"))
    k = nn.with_logical_constraint(jnp.concatenate([kv[..., :nope], k_pe.astype(kv.dtype)], -1),
                                   ("batch", "length", "heads", "head_dim"))
    v = nn.with_logical_constraint(kv[..., nope:], ("batch", "length", "heads", "head_dim"))
    return self_attention(q, k, v, positions, segments, impl=impl, scale=cfg.query_scale)


def _attend_latent(cfg: ModelConfig, q_nope: Array, q_pe: Array, latent: Array, k_pe: Array, kv_b: Array,
                   positions: Array, cache: dict) -> tuple[Array, dict]:
    """Decoding: write the latent and k_pe into the cache, then attend in the
    latent space (the XLA reference, as all cached attention). q_nope . (latent W_k)
    = (q_nope W_k^T) . latent, and the output's W_v is applied after the weighted
    sum, so the cache is never expanded: one shared "key" head of [latent, k_pe]
    (multi-query attention) whose values are the latent alone."""
    nope = cfg.mla.qk_nope_head_dim
    written = {"k": cache["latent"], "v": cache["k_pe"]}
    latent_all, pe_all, k_positions, written = write_cache(written, latent, k_pe[:, :, 0], positions)
    q_latent = jnp.einsum("bthd,rhd->bthr", q_nope, kv_b[..., :nope])
    q = jnp.concatenate([q_latent, q_pe.astype(q_latent.dtype)], -1)
    k = jnp.concatenate([latent_all, pe_all], -1)[:, :, None, :].astype(q.dtype)
    mask = attention_mask(positions, k_positions, None, None, None)
    out_latent = xla_attention(q, k, latent_all[:, :, None, :].astype(q.dtype), mask, cfg.query_scale, None)
    out = jnp.einsum("bthr,rhd->bthd", out_latent, kv_b[..., nope:])
    return out, {"latent": written["k"], "k_pe": written["v"]}


def init_mla_cache(config: ModelConfig, batch: int, length: int, dtype: Any) -> dict:
    """An empty MLA cache of `length` slots: the normalised latent and the rotated k_pe."""
    mla = config.mla
    return {"latent": jnp.zeros((batch, length, mla.kv_lora_rank), dtype),
            "k_pe": jnp.zeros((batch, length, mla.qk_rope_head_dim), dtype)}
