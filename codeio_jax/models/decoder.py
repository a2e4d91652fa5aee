"""The decoder: one module for every family, the differences read from the config.

    tokens -> embed (x sqrt(hidden) for Gemma 2) -> layers -> norm -> logits
    layer:  x + [post_norm](attention(norm(x)));  then  + [post_norm](mlp(norm(x)))

`Decoder.__call__(tokens, positions, segments, cache)` returns (logits, cache).
Training passes segment ids (packing: tokens attend within their segment) and
no cache; sampling passes a cache (decoder.init_cache) and gets it back with
the new keys and values written in.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codeio_jax.models.config import ModelConfig
from codeio_jax.models.layers import MLP, Attention, RMSNorm, Weight, dense_init

Array = jax.Array

_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class DecoderLayer(nn.Module):
    config: ModelConfig
    layer: int

    @nn.compact
    def __call__(self, x: Array, positions: Array, segments: Array | None, cache: dict | None):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)

        def norm(name):
            return RMSNorm(cfg.norm_eps, cfg.norm_plus_one, dtype, jnp.dtype(cfg.param_dtype), name=name)

        if cfg.mla is not None:
            from codeio_jax.models.deepseek import MLAttention

            attention = MLAttention(cfg, self.layer, name="self_attn")
        else:
            attention = Attention(cfg, self.layer, name="self_attn")
        h, cache = attention(norm("input_layernorm")(x), positions, segments, cache)
        if cfg.post_norms:
            h = norm("post_attention_layernorm")(h)
            x = x + h
            h = norm("pre_feedforward_layernorm")(x)
        else:
            x = x + h
            h = norm("post_attention_layernorm")(x)
        if cfg.layer_is_moe(self.layer):
            from codeio_jax.models.moe import MoE

            h = MoE(cfg, name="mlp")(h)
        else:
            h = MLP(cfg, cfg.intermediate_size, name="mlp")(h)
        if cfg.post_norms:
            h = norm("post_feedforward_layernorm")(h)
        x = nn.with_logical_constraint(x + h, ("batch", "length", "embed"))
        return x.astype(dtype), cache


class Decoder(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, tokens: Array, positions: Array | None = None, segments: Array | None = None,
                 cache: list[dict] | None = None, return_hidden: bool = False):
        """(logits, cache); with return_hidden, (the final normed hidden states, cache)
        instead of logits: the caller applies vocab_logits itself (a chunked loss)."""
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1])[None, :], tokens.shape)
        embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=pdtype,
                         embedding_init=dense_init(("vocab", "embed"), 1.0), name="embed_tokens")
        x = embed(tokens)
        if cfg.embedding_scale:
            # Gemma multiplies by sqrt(hidden) rounded to the compute dtype, as its reference does.
            x = x * jnp.asarray(cfg.hidden_size ** 0.5, dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        layer_cls = DecoderLayer
        if cfg.remat != "none":
            layer_cls = nn.remat(DecoderLayer, policy=_REMAT[cfg.remat], prevent_cse=True)
        new_cache = [] if cache is not None else None
        for i in range(cfg.num_layers):
            x, layer_cache = layer_cls(cfg, i, name=f"layers_{i}")(
                x, positions, segments, cache[i] if cache is not None else None)
            if cache is not None:
                new_cache.append(layer_cache)
        x = RMSNorm(cfg.norm_eps, cfg.norm_plus_one, dtype, pdtype, name="norm")(x)
        if cfg.tie_embeddings:
            kernel = embed.embedding.T
        else:
            kernel = Weight((cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pdtype, name="lm_head")()
        if return_hidden:
            return x, new_cache
        return vocab_logits(cfg, x, kernel), new_cache


def vocab_logits(config: ModelConfig, hidden: Array, kernel: Array) -> Array:
    """Logits [..., vocab] from the final normed hidden states and the output
    kernel [embed, vocab] (the embedding, transposed, when tied), in the compute
    dtype, soft-capped for Gemma 2."""
    dtype = jnp.dtype(config.dtype)
    logits = jnp.dot(hidden.astype(dtype), kernel.astype(dtype))
    if config.final_logit_softcap is not None:
        logits = jnp.tanh(logits / config.final_logit_softcap) * config.final_logit_softcap
    names = ("batch", "length", "vocab")[-logits.ndim:]
    return nn.with_logical_constraint(logits, names)


def output_kernel(config: ModelConfig, params: dict) -> Array:
    """The kernel vocab_logits takes, from a parameter tree."""
    if config.tie_embeddings:
        return params["embed_tokens"]["embedding"].T
    return params["lm_head"]["kernel"]


def init_cache(config: ModelConfig, batch: int, length: int, dtype: Any = None) -> list[dict]:
    """An empty key/value cache of `length` slots per row, one entry per layer."""
    dtype = jnp.dtype(dtype or config.dtype)
    if config.mla is not None:
        from codeio_jax.models.deepseek import init_mla_cache

        return [init_mla_cache(config, batch, length, dtype) for _ in range(config.num_layers)]
    shape = (batch, length, config.num_kv_heads, config.head_dim)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(config.num_layers)]


def init_params(config: ModelConfig, rng: Array) -> dict:
    """Random parameters (boxed with their logical axis names)."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    return Decoder(config).init(rng, tokens)["params"]


def logical_axes(config: ModelConfig) -> dict:
    """The parameter tree with each leaf's logical axis names, without allocating."""
    boxed = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    return nn.get_partition_spec(boxed)
