"""DeepSeekMoE: shared experts always on, the top-k of the routed experts per token.

    out = shared_experts(x) + sum over the top-k experts e of weight_e * expert_e(x)

The router runs in float32 (as the reference does). The routed experts' weights
are stacked ([experts, embed, mlp] for gate and up, [experts, mlp, embed] for
down) and carry the logical name "experts".
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from codeio_jax.models.config import ModelConfig
from codeio_jax.models.layers import MLP, dense_init

Array = jax.Array


class Experts(nn.Module):
    """The routed experts' gated-MLP weights, stacked: [experts, embed, mlp] (gate,
    up) and [experts, mlp, embed] (down)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, combine: Array) -> Array:
        """x [b, t, embed], combine [b, t, experts] (routing weight, 0 off the top-k)."""
        cfg, moe = self.config, self.config.moe
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        up_shape = (moe.num_experts, cfg.hidden_size, moe.expert_intermediate_size)
        gate = self.param("gate_proj", dense_init(("experts", "embed", "mlp")), up_shape, pdtype).astype(dtype)
        up = self.param("up_proj", dense_init(("experts", "embed", "mlp")), up_shape, pdtype).astype(dtype)
        down = self.param("down_proj", dense_init(("experts", "mlp", "embed")),
                          (moe.num_experts, moe.expert_intermediate_size, cfg.hidden_size), pdtype).astype(dtype)
        x = x.astype(dtype)
        g = jnp.einsum("bte,xem->btxm", x, gate)
        act = jax.nn.silu(g) if cfg.activation == "silu" else jax.nn.gelu(g, approximate=True)
        hidden = act * jnp.einsum("bte,xem->btxm", x, up) * combine[..., None].astype(dtype)
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "experts", "mlp"))
        return jnp.einsum("btxm,xme->bte", hidden, down)


class MoE(nn.Module):
    """DeepSeekMoE with greedy top-k routing (V2-Lite; V2's group-limited
    routing is not implemented). Every expert runs on every token and the
    combine weights zero all but the top-k: exact, and simple to shard over
    "experts", but num_experts / experts_per_token times the FLOPs of a
    dispatching implementation (~10x for V2-Lite's 64 / 6)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg, moe = self.config, self.config.moe
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        # The router runs in float32 whatever the compute dtype, as the reference does.
        logits = nn.Dense(moe.num_experts, use_bias=False, dtype=jnp.float32, param_dtype=pdtype,
                          kernel_init=dense_init(("embed", "experts")), name="gate")(x)
        scores = jax.nn.softmax(logits, axis=-1)
        weights, chosen = jax.lax.top_k(scores, moe.experts_per_token)
        if moe.normalize_top_k and moe.experts_per_token > 1:
            # DeepSeek-V2's reference normalises *instead of* scaling (transformers 5 ignores
            # norm_topk_prob); every released V2 has norm_topk_prob false.
            weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
        else:
            weights = weights * moe.routed_scaling_factor
        combine = jnp.einsum("btk,btkx->btx", weights, jax.nn.one_hot(chosen, moe.num_experts, dtype=weights.dtype))
        out = Experts(cfg, name="experts")(x, combine)
        if moe.num_shared_experts:
            shared = MLP(cfg, moe.expert_intermediate_size * moe.num_shared_experts, name="shared_experts")(x)
            out = out + shared
        return nn.with_logical_constraint(out.astype(dtype), ("batch", "length", "embed"))
