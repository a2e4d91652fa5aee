"""DeepSeekMoE: shared experts always on, the top-k of the routed experts per token.

    out = shared_experts(x) + sum over the top-k experts e of weight_e * expert_e(x)

The router runs in float32 (as the reference does). The routed experts' weights
are stacked ([experts, embed, mlp] for gate and up, [experts, mlp, embed] for
down) and carry the logical name "experts". Two implementations of the routed
experts, chosen by `ModelConfig.moe_impl`, share those parameters:

dropless (default)
    The (token, chosen expert) pairs sorted by expert; one grouped matmul per
    projection over the sorted rows (the group sizes say which rows go to which
    expert); each row scaled by its routing weight and added back into its
    token. No token is dropped, whatever the routing. The grouped matmul
    (grouped_matmul.py) is Pallas' megablox on TPU, forward and backward
    (`GroupedMatmulSettings.interpret` runs it anywhere, for tests), and
    `jax.lax.ragged_dot` elsewhere.
dense
    Every expert on every token, the routing weights zero off the top-k: the
    exact reference, num_experts / experts_per_token times the FLOPs.

Expert parallelism. Under a mesh (`jax.set_mesh`, as the trainer runs its
step) the dropless path is a shard_map over the whole mesh. Each device routes
the tokens it holds; along the mesh axes that the logical name "experts" maps
to, the devices all-gather their tokens, each runs the pairs that chose one of
its own num_experts / ep experts, and the weighted sums are reduce-scattered
back to the devices that own the tokens (summed over the axes that split
"mlp" first). The expert weights never move between expert shards; the
"embed" dimension they are sharded by over fsdp is gathered on entry, as FSDP
gathers every weight. Without a mesh (eager `apply`, the sampler) the same
computation runs on one device's view of all the tokens.

Limits, plainly:
- XLA:CPU has no ragged dot: jax lowers `ragged_dot` there to a dot against
  every expert with the rows of the others masked, so on CPU the dropless path
  costs num_experts times its active FLOPs (experts_per_token times the dense
  path's). It is exact there (the tests compare it with dense); for CPU runs
  of any size, moe_impl="dense" is the faster choice.
- Off TPU, gradients go through ragged_dot's transpose, whose weight gradient
  is a ragged-*contracting* dot that XLA lowers to a masked dense product over
  every expert (num_experts times the active FLOPs; GPU not measured). On TPU
  megablox's tgmm computes it grouped: for DeepSeek-V2-Lite's MoE layer on one
  v5p chip XLA counts 1.08x the active FLOPs (benchmarks/moe_step.py).
- megablox's shapes: the sorted rows are padded to a multiple of 128 (up to
  127 rows beyond the worst case below); hidden_size and expert_intermediate_size must be
  multiples of 128 or at most GroupedMatmulSettings.tile (grouped_matmul.py
  says what it takes and raises otherwise). Under expert parallelism the
  kernels' flop count, taken from their buffer size, is the worst-case
  buffer's, though only the rows of the device's own experts are computed.
- Dropless with static shapes means worst-case buffers: with ep devices on the
  experts axes and n tokens per device, each device sorts the k x ep x n pairs
  of its group and keeps ep x n x min(k, num_experts / ep) rows, the most that
  can choose its experts. Communication is one all-gather of the tokens and one
  reduce-scatter (float32) of the outputs over the experts axes: (ep - 1) x n x
  embed values into each device and as many out. A ragged all-to-all would move
  the k copies of a token that leave, k x n x (ep - 1) / ep x embed each way
  (k / ep of the gather: less once ep > k), but XLA:CPU has no
  ragged-all-to-all, so it could not be tested here.
- `num_experts` must divide by the size of the experts axes. Under the remat
  policies "dots" and "dots_with_no_batch_dims" the grouped matmuls' outputs
  are recomputed (they save dot_general outputs only).
- Greedy top-k routing only (V2-Lite); V2's group-limited routing is refused by
  `from_hf_config`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from codeio_jax.models.config import ModelConfig
from codeio_jax.models.grouped_matmul import GroupedMatmulSettings, grouped_matmul, padded_rows
from codeio_jax.models.layers import MLP, dense_init

Array = jax.Array


class Experts(nn.Module):
    """The routed experts' gated-MLP weights, stacked: [experts, embed, mlp] (gate,
    up) and [experts, mlp, embed] (down), run the way `config.moe_impl` says."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, weights: Array, chosen: Array) -> Array:
        """x [b, t, embed]; weights and chosen [b, t, k]: each token's routing
        weights and the experts they belong to."""
        cfg, moe = self.config, self.config.moe
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        up_shape = (moe.num_experts, cfg.hidden_size, moe.expert_intermediate_size)
        gate = self.param("gate_proj", dense_init(("experts", "embed", "mlp")), up_shape, pdtype).astype(dtype)
        up = self.param("up_proj", dense_init(("experts", "embed", "mlp")), up_shape, pdtype).astype(dtype)
        down = self.param("down_proj", dense_init(("experts", "mlp", "embed")),
                          (moe.num_experts, moe.expert_intermediate_size, cfg.hidden_size), pdtype).astype(dtype)
        x = x.astype(dtype)
        if cfg.moe_impl == "dense":
            combine = jnp.einsum("btk,btkx->btx", weights,
                                 jax.nn.one_hot(chosen, moe.num_experts, dtype=weights.dtype))
            g = jnp.einsum("bte,xem->btxm", x, gate)
            hidden = _act(cfg, g) * jnp.einsum("bte,xem->btxm", x, up) * combine[..., None].astype(dtype)
            hidden = nn.with_logical_constraint(hidden, ("batch", "length", "experts", "mlp"))
            return jnp.einsum("btxm,xme->bte", hidden, down)
        if jax.sharding.get_abstract_mesh().empty:
            flat = _grouped_experts(cfg, x.reshape(-1, x.shape[-1]), weights.reshape(-1, weights.shape[-1]),
                                    chosen.reshape(-1, chosen.shape[-1]), gate, up, down, first_expert=0)
            return flat.reshape(x.shape).astype(dtype)
        return _expert_parallel(cfg, x, weights, chosen, gate, up, down).astype(dtype)


def _act(cfg: ModelConfig, g: Array) -> Array:
    return jax.nn.silu(g) if cfg.activation == "silu" else jax.nn.gelu(g, approximate=True)


def _grouped_experts(cfg: ModelConfig, x: Array, weights: Array, chosen: Array, gate: Array, up: Array,
                     down: Array, first_expert: Array | int) -> Array:
    """The routed output (float32) of n tokens x [n, embed] through the experts
    first_expert .. first_expert + len(gate) - 1 (the others contribute nothing);
    weights and chosen [n, k]."""
    n, k = chosen.shape
    local_experts = gate.shape[0]
    settings = GroupedMatmulSettings()
    local = chosen.reshape(-1) - first_expert
    mine = (local >= 0) & (local < local_experts)
    # The pairs for other devices' experts sort last, under one extra key, and
    # are cut off: at most min(k, local_experts) of a token's k pairs can be ours.
    # The grouped matmul may want a few more rows (alignment): they repeat pair 0,
    # past the groups, like the other devices' pairs.
    key = jnp.where(mine, local, local_experts)
    rows = n * min(k, local_experts)
    order = jnp.argsort(key, stable=True)[:rows]
    order = jnp.pad(order, (0, padded_rows(rows, settings) - rows))
    group_sizes = jnp.bincount(key, length=local_experts + 1)[:local_experts].astype(jnp.int32)
    token = order // k
    sorted_x = x[token]
    g = grouped_matmul(sorted_x, gate, group_sizes, settings)
    u = grouped_matmul(sorted_x, up, group_sizes, settings)
    hidden = (_act(cfg, g) * u).astype(x.dtype)
    y = grouped_matmul(hidden, down, group_sizes, settings)
    # Rows past the last group hold other experts' pairs (or padding): kept out by
    # where, not by a zero weight, as what ragged_dot leaves there is unspecified.
    in_groups = (jnp.arange(len(order)) < group_sizes.sum())[:, None]
    y = jnp.where(in_groups, y * weights.reshape(-1)[order][:, None].astype(jnp.float32), 0.0)
    return jnp.zeros((n, x.shape[-1]), jnp.float32).at[token].add(y)


def _mesh_axes(entry) -> tuple[str, ...]:
    """A PartitionSpec entry (None, an axis name or a tuple of them) as a tuple."""
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _expert_parallel(cfg: ModelConfig, x: Array, weights: Array, chosen: Array, gate: Array, up: Array,
                     down: Array) -> Array:
    """The dropless experts as a shard_map over the context mesh (module docstring)."""
    mesh = jax.sharding.get_abstract_mesh()
    # Each device takes its tokens whole along embed (the grouped matmuls contract
    # it). A dimension the mesh axes do not divide (the trainer's init traces one
    # token) stays whole too: its tokens are then replicated over those axes,
    # which the reductions below account for.
    batch_entry, length_entry, _ = nn.logical_to_mesh_axes(("batch", "length", "embed"))
    token_spec = PartitionSpec(*(
        entry if size % math.prod(mesh.shape[a] for a in _mesh_axes(entry)) == 0 else None
        for entry, size in zip((batch_entry, length_entry), x.shape[:2])), None)
    token_axes = {a for entry in token_spec for a in _mesh_axes(entry)}
    expert_entry, _, mlp_entry = nn.logical_to_mesh_axes(("experts", "embed", "mlp"))
    expert_axes = _mesh_axes(expert_entry)
    # mlp stays split (tensor parallelism) unless its axes also split the tokens.
    mlp_axes = tuple(a for a in _mesh_axes(mlp_entry) if a not in token_axes)
    shards = math.prod(mesh.shape[a] for a in expert_axes)
    if cfg.moe.num_experts % shards:
        raise ValueError(f"num_experts ({cfg.moe.num_experts}) must divide by the {shards} devices of the mesh "
                         f"axes {expert_axes} that the experts are split over")
    gathered = tuple(a for a in expert_axes if a in token_axes)
    summed = tuple(a for a in expert_axes if a not in token_axes) + mlp_axes
    experts = expert_axes or None
    mlp = mlp_axes or None
    routing_spec = PartitionSpec(*token_spec[:-1], None)

    def local(x, weights, chosen, gate, up, down):
        shape = x.shape
        x, weights, chosen = (a.reshape(-1, a.shape[-1]) for a in (x, weights, chosen))
        if gathered:
            x, weights, chosen = (jax.lax.all_gather(a, gathered, tiled=True) for a in (x, weights, chosen))
        first = jax.lax.axis_index(expert_axes) * gate.shape[0] if expert_axes else 0
        out = _grouped_experts(cfg, x, weights, chosen, gate, up, down, first)
        if gathered:
            out = jax.lax.psum_scatter(out, gathered, tiled=True)
        if summed:
            out = jax.lax.psum(out, summed)
        return out.reshape(shape)

    # Unchecked: Pallas kernels (megablox) cannot say how their outputs vary over the
    # mesh axes; the specs above and the collectives in `local` say it instead.
    return jax.shard_map(
        local, in_specs=(token_spec, routing_spec, routing_spec, PartitionSpec(experts, None, mlp),
                         PartitionSpec(experts, None, mlp), PartitionSpec(experts, mlp, None)),
        out_specs=token_spec, check_vma=False)(x, weights, chosen, gate, up, down)


class MoE(nn.Module):
    """DeepSeekMoE with greedy top-k routing (V2-Lite; V2's group-limited routing
    is not implemented)."""

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
        out = Experts(cfg, name="experts")(x, weights, chosen)
        if moe.num_shared_experts:
            shared = MLP(cfg, moe.expert_intermediate_size * moe.num_shared_experts, name="shared_experts")(x)
            out = out + shared
        return nn.with_logical_constraint(out.astype(dtype), ("batch", "length", "embed"))
