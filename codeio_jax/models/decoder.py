"""The decoder: one module for every family, the differences read from the config.

    tokens -> embed (x sqrt(hidden) for Gemma 2) -> layers -> norm -> logits
    layer:  x + [post_norm](attention(norm(x)));  then  + [post_norm](mlp(norm(x)))

`Decoder.__call__(tokens, positions, segments, cache)` returns (logits, cache).
Training passes segment ids (packing: tokens attend within their segment) and
no cache; sampling passes a cache (decoder.init_cache) and gets it back with
the new keys and values written in.

With `scan_layers` (training and scoring, not sampling) the layers run as
lax.scan over runs of identical layers (layer_runs), each block rematerialised
on its own; the parameters stay one subtree per layer (layers_0, layers_1, ...)
and are stacked for the scan inside the step, so a checkpoint does not depend on
the switch. The stacking copies the layer weights once per step (their size,
not the activations'), the price of one parameter tree for both paths.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codeio_jax.models.config import ModelConfig
from codeio_jax.models.layers import LORA_COLLECTION, LORA_DROPOUT_RNG, MLP, Attention, RMSNorm, Weight, dense_init

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
        if cfg.scan_layers and cache is None and not self.is_initializing():
            adapters = nn.meta.unbox(self.variables.get(LORA_COLLECTION, {})) or None
            dropout_rng = self.make_rng(LORA_DROPOUT_RNG) if self.has_rng(LORA_DROPOUT_RNG) else None
            x = scanned_layers(cfg, nn.meta.unbox(self.variables["params"]), x, positions, segments, adapters,
                               dropout_rng)
        else:
            for i in range(cfg.num_layers):
                x, layer_cache = layer_cls(cfg, i, name=f"layers_{i}")(
                    x, positions, segments, cache[i] if cache is not None else None)
                if cache is not None:
                    new_cache.append(layer_cache)
        x = RMSNorm(cfg.norm_eps, cfg.norm_plus_one, dtype, pdtype, name="norm")(x)
        if cfg.tie_embeddings:
            kernel = embed.embedding
        else:
            kernel = Weight((cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pdtype, name="lm_head")()
        if return_hidden:
            return x, new_cache
        return vocab_logits(cfg, x, kernel), new_cache


def layer_kind(config: ModelConfig, layer: int) -> tuple[bool, bool]:
    """What makes one layer's computation differ from another's: its sliding window and its MLP."""
    return config.layer_slides(layer), config.layer_is_moe(layer)


def layer_runs(config: ModelConfig) -> list[tuple[int, int, int]]:
    """The layers as (first, period, repeats) runs: `repeats` consecutive blocks of
    `period` layers whose kinds repeat. Llama: one run (0, 1, L); Gemma 2's
    alternating windows: (0, 2, L / 2); DeepSeek-V2's first dense layer: (0, 1, 1)
    then (1, 1, L - 1). Greedy from the first layer, the shortest period that
    repeats at least twice, as many times as it does."""
    kinds = [layer_kind(config, i) for i in range(config.num_layers)]
    runs, start = [], 0
    while start < len(kinds):
        best = (1, 1)
        for period in range(1, (len(kinds) - start) // 2 + 1):
            pattern = kinds[start:start + period]
            repeats = 1
            while kinds[start + repeats * period:start + (repeats + 1) * period] == pattern:
                repeats += 1
            if repeats > 1:
                best = (period, repeats)
                break
        runs.append((start, *best))
        start += best[0] * best[1]
    return runs


def scanned_layers(config: ModelConfig, params: dict, x: Array, positions: Array, segments: Array | None,
                   adapters: dict | None = None, dropout_rng: Array | None = None) -> Array:
    """The layers applied as one lax.scan per run of layer_runs, each block rematerialised
    under the config's policy. The per-layer parameters (layers_0, layers_1, ...) and
    LoRA adapters are stacked for the scan here, so the stored trees are the unrolled
    ones; each layer's adapter dropout draws from the rng folded with its index."""
    policy = _REMAT.get(config.remat)

    def layer_variables(index: int) -> dict:
        variables = {"params": params[f"layers_{index}"]}
        if adapters is not None and f"layers_{index}" in adapters:
            variables[LORA_COLLECTION] = adapters[f"layers_{index}"]
        return variables

    for start, period, repeats in layer_runs(config):
        def block(h, xs, start=start, period=period):
            block_variables, first = xs
            for j in range(period):
                # parent=None: applied functionally, not registered as a child of the Decoder.
                layer = DecoderLayer(config, start + j, parent=None)
                rngs = ({LORA_DROPOUT_RNG: jax.random.fold_in(dropout_rng, first + j)}
                        if dropout_rng is not None else None)
                h, _ = layer.apply(block_variables[j], h, positions, segments, None, rngs=rngs)
            return h, None

        if config.remat != "none":
            block = jax.checkpoint(block, policy=policy, prevent_cse=False)
        blocks = [[layer_variables(start + r * period + j) for j in range(period)] for r in range(repeats)]
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *blocks)
        firsts = start + period * jnp.arange(repeats)
        x, _ = jax.lax.scan(block, x, (stacked, firsts))
    return x


def vocab_logits(config: ModelConfig, hidden: Array, kernel: Array) -> Array:
    """Logits [..., vocab] from the final normed hidden states and the output
    kernel as stored: lm_head's [embed, vocab], or when tied the embedding itself,
    [vocab, embed], contracted in place (a transposed copy would be one more
    vocabulary-sized buffer, and its gradient another); in the compute dtype,
    soft-capped for Gemma 2."""
    dtype = jnp.dtype(config.dtype)
    contract = 1 if config.tie_embeddings else 0
    logits = jax.lax.dot_general(hidden.astype(dtype), kernel.astype(dtype),
                                 (((hidden.ndim - 1,), (contract,)), ((), ())))
    if config.final_logit_softcap is not None:
        logits = jnp.tanh(logits / config.final_logit_softcap) * config.final_logit_softcap
    names = ("batch", "length", "vocab")[-logits.ndim:]
    return nn.with_logical_constraint(logits, names)


def output_kernel(config: ModelConfig, params: dict) -> Array:
    """The kernel vocab_logits takes, from a parameter tree."""
    if config.tie_embeddings:
        return params["embed_tokens"]["embedding"]
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
