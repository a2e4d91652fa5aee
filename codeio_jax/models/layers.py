"""The decoder's building blocks: norms, rotary embeddings, attention, MLP.

Every parameter is created with logical axis names (nn.with_logical_partitioning)
and big activations are constrained by name (nn.with_logical_constraint); the
trainer's rules map the names onto a device mesh, and without rules both are
no-ops. Names: batch, length, embed, heads, kv_heads, head_dim, mlp, vocab, experts.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codeio_jax.models.attention import attention_mask, parameter_free_impl, self_attention, xla_attention
from codeio_jax.models.config import LoraConfig, ModelConfig, RopeConfig

Array = jax.Array

# Adapters live in their own variable collection beside "params", so a step can
# differentiate them alone and a checkpoint can hold them alone.
LORA_COLLECTION = "lora"
LORA_DROPOUT_RNG = "lora_dropout"


def dense_init(names: tuple[str, ...], scale: float = 0.02):
    return nn.with_logical_partitioning(nn.initializers.normal(scale), names)


def zeros_init(names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


class Projection(nn.Module):
    """A dense layer over the last `contract` dimensions of x, whose kernel keeps
    its full shape ([*in, *features]) so each dimension carries its own logical
    name (flax's DenseGeneral initialises a flattened 2-D kernel, which a 3-D
    name tuple cannot constrain)."""

    features: tuple[int, ...]
    names: tuple[str, ...]
    contract: int = 1
    use_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    lora: LoraConfig | None = None  # adapters when it targets this projection's name

    @nn.compact
    def __call__(self, x: Array) -> Array:
        inputs = x.shape[x.ndim - self.contract:]
        shape = (*inputs, *self.features)
        kernel = self.param("kernel", dense_init(self.names), shape, self.param_dtype)
        y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=self.contract)
        if self.use_bias:
            bias_names = self.names[self.contract:]
            y = y + self.param("bias", zeros_init(bias_names), self.features, self.param_dtype).astype(self.dtype)
        if self.lora is not None and self.lora.targets_module(self.name) and (
                self.is_initializing() or self.has_variable(LORA_COLLECTION, "lora_a")):
            y = y + self._adapter(x, inputs)
        return y

    def _adapter(self, x: Array, inputs: tuple[int, ...]) -> Array:
        """scale * dropout(x) A B, through the rank-wide bottleneck (never the
        full-size product A B: that would cost a weight's memory and FLOPs)."""
        lora, dtype = self.lora, self.dtype
        # PEFT's init: A uniform with bound 1 / sqrt(fan_in) (kaiming_uniform, a = sqrt(5)), B zero.
        bound = 1.0 / math.sqrt(math.prod(inputs))

        def uniform(key, shape, dtype_):
            return jax.random.uniform(key, shape, dtype_, -bound, bound)

        in_names, out_names = self.names[:self.contract], self.names[self.contract:]
        a = self.variable(LORA_COLLECTION, "lora_a", nn.with_logical_partitioning(uniform, (*in_names, None)),
                          self.make_rng("params") if self.is_initializing() else None,
                          (*inputs, lora.rank), self.param_dtype).value
        b = self.variable(LORA_COLLECTION, "lora_b",
                          nn.with_logical_partitioning(nn.initializers.zeros_init(), (None, *out_names)),
                          None, (lora.rank, *self.features), self.param_dtype).value
        a, b = nn.meta.unbox(a), nn.meta.unbox(b)
        if lora.dropout and self.has_rng(LORA_DROPOUT_RNG):  # training passes the rng; scoring and sampling do not
            keep = jax.random.bernoulli(self.make_rng(LORA_DROPOUT_RNG), 1.0 - lora.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - lora.dropout), 0).astype(x.dtype)
        low = jnp.tensordot(x.astype(dtype), a.astype(dtype), axes=self.contract)
        return jnp.tensordot(low, b.astype(dtype), axes=1) * jnp.asarray(lora.scale, dtype)


class Weight(nn.Module):
    """A bare kernel named `kernel`, for a weight used in more than one product
    or applied by the caller: MLA's kv_b_proj (expanding the latent, or absorbed
    into query and output) and the output projection (applied a chunk of the
    sequence at a time by the loss), which a Dense module cannot give out
    without being called."""

    shape: tuple[int, ...]
    names: tuple[str, ...]
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> Array:
        return self.param("kernel", dense_init(self.names), self.shape, self.param_dtype)


class RMSNorm(nn.Module):
    """x / rms(x) * w, in float32 whatever the compute dtype; Gemma's variant
    keeps w as an offset from one (x / rms(x) * (1 + w)) and casts after the
    product, Llama's casts before it, as each reference implementation does."""

    eps: float
    plus_one: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        init = nn.initializers.zeros_init() if self.plus_one else nn.initializers.ones_init()
        weight = self.param("weight", nn.with_logical_partitioning(init, ("embed",)), (x.shape[-1],),
                            self.param_dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.plus_one:
            return (normed * (1.0 + weight.astype(jnp.float32))).astype(self.dtype)
        return weight.astype(self.dtype) * normed.astype(self.dtype)


def inverse_frequencies(rope: RopeConfig, dim: int) -> tuple[Array, float]:
    """(inverse frequencies of the rotary pairs, attention scale factor)."""
    inv = 1.0 / (rope.theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    if rope.kind == "llama3":
        low_wavelen = rope.original_max_position_embeddings / rope.low_freq_factor
        high_wavelen = rope.original_max_position_embeddings / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = jnp.where(wavelen > low_wavelen, inv / rope.factor, inv)
        smooth = (rope.original_max_position_embeddings / wavelen - rope.low_freq_factor) / (
            rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return jnp.where(medium, smoothed, scaled), 1.0
    if rope.kind == "yarn":
        return _yarn(rope, dim, inv)
    return inv, 1.0


def _yarn(rope: RopeConfig, dim: int, inv: Array) -> tuple[Array, float]:
    """YaRN: interpolate the low frequencies by `factor`, keep the high ones,
    ramp between them; attention is scaled by the ratio of the two mscales."""
    base, original = rope.theta, rope.original_max_position_embeddings

    def correction_dim(rotations):
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(correction_dim(rope.beta_fast)), 0)
    high = min(math.ceil(correction_dim(rope.beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = jnp.clip((jnp.arange(dim // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    interpolated = inv / rope.factor
    inv = interpolated * (1 - extrapolation) + inv * extrapolation

    def mscale(scale, m):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    return inv, mscale(rope.factor, rope.mscale) / mscale(rope.factor, rope.mscale_all_dim)


def rotary(x: Array, positions: Array, inv_freq: Array, factor: float = 1.0,
           interleaved: bool = False) -> Array:
    """Rotate [batch, length, heads, dim] by `positions` [batch, length]. The
    default pairs dimension i with i + dim/2 (Hugging Face's rotate_half);
    `interleaved` pairs 2i with 2i + 1 (DeepSeek's original weights)."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [b, t, dim/2]
    cos = (jnp.cos(angles) * factor)[:, :, None, :]
    sin = (jnp.sin(angles) * factor)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    if interleaved:
        first, second = x32[..., 0::2], x32[..., 1::2]
    else:
        first, second = jnp.split(x32, 2, axis=-1)
    out_first = first * cos - second * sin
    out_second = second * cos + first * sin
    if interleaved:
        out = jnp.stack([out_first, out_second], axis=-1).reshape(x.shape)
    else:
        out = jnp.concatenate([out_first, out_second], axis=-1)
    return out.astype(x.dtype)


class Attention(nn.Module):
    """Grouped-query attention with rotary positions (Llama, Qwen 2.5, Gemma 2),
    by config.attention_impl (models/attention.py). With a cache, the new keys
    and values are written at their positions and the queries attend over the
    whole cache (always the XLA reference)."""

    config: ModelConfig
    layer: int

    @nn.compact
    def __call__(self, x: Array, positions: Array, segments: Array | None, cache: dict | None):
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def project(name, heads, names):
            return Projection((heads, cfg.head_dim), ("embed", *names), use_bias=cfg.qkv_bias, dtype=dtype,
                              param_dtype=pdtype, lora=cfg.lora, name=name)(x)

        q = project("q_proj", cfg.num_heads, ("heads", "head_dim"))
        k = project("k_proj", cfg.num_kv_heads, ("kv_heads", "head_dim"))
        v = project("v_proj", cfg.num_kv_heads, ("kv_heads", "head_dim"))
        inv_freq, factor = inverse_frequencies(cfg.rope, cfg.head_dim)
        q = rotary(q, positions, inv_freq, factor)
        k = rotary(k, positions, inv_freq, factor)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))
        window = cfg.sliding_window if cfg.layer_slides(self.layer) else None
        if cache is None:
            out = self_attention(q, k, v, positions, segments, impl=parameter_free_impl(self, cfg.attention_impl),
                                 scale=cfg.query_scale, softcap=cfg.attn_logit_softcap, window=window)
        else:
            k, v, k_positions, cache = write_cache(cache, k, v, positions)
            mask = attention_mask(positions, k_positions, None, None, window)
            out = xla_attention(q, k, v, mask, cfg.query_scale, cfg.attn_logit_softcap)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "head_dim"))
        out = Projection((cfg.hidden_size,), ("heads", "head_dim", "embed"), contract=2, dtype=dtype,
                         param_dtype=pdtype, lora=cfg.lora, name="o_proj")(out)
        return out, cache


def write_cache(cache: dict, k: Array, v: Array, positions: Array):
    """Write the new keys and values ({"k", "v"}: [b, s, kv_heads, d]) at each
    row's positions (rows may be at different positions) and attend over all s
    slots: (keys, values, slot positions, the cache). Slot j holds position j,
    so causality by position leaves unwritten slots out."""
    start = positions[:, 0]

    def put(buffer, new, at):
        return jax.lax.dynamic_update_slice_in_dim(buffer, new.astype(buffer.dtype), at, axis=0)

    k_all = jax.vmap(put)(cache["k"], k, start)
    v_all = jax.vmap(put)(cache["v"], v, start)
    slots = jnp.broadcast_to(jnp.arange(k_all.shape[1])[None, :], k_all.shape[:2])
    return k_all, v_all, slots, {"k": k_all, "v": v_all}


class MLP(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU (silu) or GeGLU (tanh-approximated gelu)."""

    config: ModelConfig
    intermediate_size: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def dense(name, features, names):
            return Projection((features,), names, dtype=dtype, param_dtype=pdtype, lora=cfg.lora, name=name)

        gate = dense("gate_proj", self.intermediate_size, ("embed", "mlp"))(x)
        up = dense("up_proj", self.intermediate_size, ("embed", "mlp"))(x)
        act = jax.nn.silu(gate) if cfg.activation == "silu" else jax.nn.gelu(gate, approximate=True)
        hidden = nn.with_logical_constraint(act * up, ("batch", "length", "mlp"))
        return dense("down_proj", cfg.hidden_size, ("mlp", "embed"))(hidden)
