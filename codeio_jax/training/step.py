"""The train state and one training step.

The step: forward in the compute dtype (bfloat16 on accelerators) over float32
master weights, masked cross-entropy in float32 (the loss falls only where
`decoder_loss_weights` is 1: assistant turns, targets) with an optional
z-loss, computed a chunk of positions at a time so the full-vocabulary logits
never exist at once, gradients, AdamW. Its FLOPs are counted in `flops_per_token`, the
numerator of MFU.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from codeio_jax.models.config import ModelConfig
from codeio_jax.models.decoder import Decoder

BATCH_KEYS = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights", "decoder_segment_ids",
              "decoder_positions")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def init_state(config: ModelConfig, optimizer: optax.GradientTransformation, seed: int,
               unbox: bool = True) -> TrainState:
    """A fresh state: of the whole model, or with `config.lora` of the adapters
    alone (the base stays outside the state: frozen, with no optimizer slots).
    With unbox=False the parameters and the optimizer slots keep their
    logical-axis boxes (for jax.eval_shape: where each goes)."""
    import flax.linen as nn

    from codeio_jax.models.decoder import init_params
    from codeio_jax.models.lora import init_adapters

    rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(config, init_rng) if config.lora is None else init_adapters(config, init_rng)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), rng=rng)
    return nn.meta.unbox(state) if unbox else state


def loss_fn(params, model: Decoder, batch: dict, z_loss: float, chunk_length: int = 0, frozen=None,
            dropout_rng: jax.Array | None = None):
    """Masked cross-entropy (+ z-loss) and accuracy over the loss-weighted positions.

    chunk_length > 0: the output projection, softmax and their gradients run a
    chunk of `chunk_length` positions at a time (a scan whose body is
    rematerialised), so the [batch, length, vocab] float32 logits and their
    gradient never exist at once; only one chunk's do. 0: the whole sequence at once.
    frozen: with LoRA, the base parameters (`params` are then the adapters, the
    only thing differentiated); dropout_rng drives the adapters' dropout."""
    hidden, kernel = final_hidden(params, model, batch, frozen, dropout_rng)
    targets = batch["decoder_target_tokens"]
    weights = batch["decoder_loss_weights"].astype(jnp.float32)
    sums = _chunked_sums(model.config, hidden, kernel, targets, weights, chunk_length)
    tokens = jnp.maximum(weights.sum(), 1.0)
    loss = sums["nll"] / tokens
    z = sums["z"] / tokens
    total = loss + z_loss * z
    return total, {"loss": loss, "z_loss": z, "accuracy": sums["correct"] / tokens, "loss_tokens": weights.sum()}


def final_hidden(params, model: Decoder, batch: dict, frozen=None, dropout_rng: jax.Array | None = None):
    """(the final normed hidden states [batch, length, embed], the output kernel) of
    the batch's inputs: params are the model, or with `frozen` (the LoRA base) the
    adapters over it; dropout_rng drives the adapters' dropout."""
    from codeio_jax.models.decoder import output_kernel
    from codeio_jax.models.layers import LORA_COLLECTION, LORA_DROPOUT_RNG

    if frozen is None:
        variables, base, rngs = {"params": params}, params, None
    else:
        variables, base = {"params": frozen, LORA_COLLECTION: params}, frozen
        rngs = {LORA_DROPOUT_RNG: dropout_rng} if dropout_rng is not None else None
    hidden, _ = model.apply(variables, batch["decoder_input_tokens"], batch["decoder_positions"],
                            batch["decoder_segment_ids"], return_hidden=True, rngs=rngs)
    return hidden, output_kernel(model.config, base)


def _sums(config, hidden, kernel, targets, weights) -> dict:
    """Weighted sums of the negative log-likelihood, log Z squared and correct argmaxes."""
    from codeio_jax.models.decoder import vocab_logits

    logits = vocab_logits(config, hidden, kernel).astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return {"nll": ((log_z - target_logit) * weights).sum(), "z": (jnp.square(log_z) * weights).sum(),
            "correct": ((logits.argmax(-1) == targets) * weights).sum()}


def _chunked_sums(config, hidden, kernel, targets, weights, chunk_length: int) -> dict:
    length = hidden.shape[1]
    if chunk_length <= 0 or chunk_length >= length:
        return _sums(config, hidden, kernel, targets, weights)
    chunks = -(-length // chunk_length)
    pad = chunks * chunk_length - length
    if pad:  # padded positions carry weight 0 and add nothing
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
        weights = jnp.pad(weights, ((0, 0), (0, pad)))

    def split(x):  # [batch, chunks * c, ...] -> [chunks, batch, c, ...]
        return jnp.swapaxes(x.reshape(x.shape[0], chunks, chunk_length, *x.shape[2:]), 0, 1)

    @jax.checkpoint
    def body(totals, chunk):
        h, t, w = chunk
        part = _sums(config, h, kernel, t, w)
        return {key: totals[key] + part[key] for key in totals}, None

    zero = jnp.zeros((), jnp.float32)
    totals, _ = jax.lax.scan(body, {"nll": zero, "z": zero, "correct": zero},
                             (split(hidden), split(targets), split(weights)))
    return totals


def train_step(state: TrainState, batch: dict, frozen=None, *, model: Decoder,
               optimizer: optax.GradientTransformation, schedule: optax.Schedule, z_loss: float = 0.0,
               loss_chunk_length: int = 0) -> tuple[TrainState, dict]:
    """One step on `state.params`: the whole model, or with `frozen` (the base,
    never updated and given no optimizer state) the LoRA adapters alone."""
    rng, dropout_rng = jax.random.split(state.rng)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, model, batch, z_loss, loss_chunk_length, frozen, dropout_rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["learning_rate"] = schedule(_optimizer_step(state, optimizer))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng), metrics


def _optimizer_step(state: TrainState, optimizer) -> jax.Array:
    """The update count the schedule is at (with accumulation, micro-steps / k)."""
    inner = getattr(state.opt_state, "gradient_step", None)
    return inner if inner is not None else state.step


def flops_per_token(config: ModelConfig, length: int) -> float:
    """Training FLOPs per token: 6 x (matmul parameters touched per token) for the
    forward and backward passes, plus attention's score and value matmuls
    (12 x layers x length x heads x head_dim, causal masking not discounted, as
    PaLM's MFU counts them). MoE counts only the experts a token uses."""
    d, layers = config.hidden_size, config.num_layers
    if config.mla is not None:
        mla = config.mla
        q = d * config.num_heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim) if mla.q_lora_rank is None else (
            d * mla.q_lora_rank + mla.q_lora_rank * config.num_heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim))
        attention = (q + d * (mla.kv_lora_rank + mla.qk_rope_head_dim)
                     + mla.kv_lora_rank * config.num_heads * (mla.qk_nope_head_dim + mla.v_head_dim)
                     + config.num_heads * mla.v_head_dim * d)
        score_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim
    else:
        attention = d * config.head_dim * (2 * config.num_heads + 2 * config.num_kv_heads)
        score_dim = 2 * config.head_dim
    dense_mlp = 3 * d * config.intermediate_size
    mlp_total = 0
    for layer in range(layers):
        if config.layer_is_moe(layer):
            moe = config.moe
            active = moe.experts_per_token + moe.num_shared_experts
            mlp_total += 3 * d * moe.expert_intermediate_size * active + d * moe.num_experts
        else:
            mlp_total += dense_mlp
    matmul_params = layers * attention + mlp_total + d * config.vocab_size
    return 6.0 * matmul_params + 6.0 * layers * length * config.num_heads * score_dim
