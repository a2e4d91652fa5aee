"""The GRPO objective: group-normalised advantages, the clipped ratio, KL (k3).

For a prompt answered G times with rewards r_1..r_G, each completion's advantage
is (r_i - mean(r)) / (std(r) + eps), the same for all its tokens (Dr. GRPO:
r_i - mean(r), no std). The per-token loss is PPO's clipped surrogate,

    -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A),
    ratio = exp(logp - logp_old),

plus kl_coef times the k3 estimate of KL(policy || reference),
exp(ref - logp) - (ref - logp) - 1, which is unbiased and never negative.
GRPO averages a completion's token losses, then the completions; Dr. GRPO sums
each completion's token losses and divides by the token budget (a constant),
which removes the bias towards long wrong answers and short right ones.

logp_old is the policy that sampled the rollouts. With one update per batch the
policy is that one, so logp_old is logp itself under stop_gradient (ratio 1, no
extra forward pass); with several, the trainer computes it once before the first.

A batch is the trainer's usual one (decoder_* features, the loss weights 1 on
the completion's tokens) plus `advantages` [rows] and, where needed,
`old_logprobs` and `ref_logprobs` [rows, length].
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp
import numpy as np

from codeio_jax.models.decoder import Decoder
from codeio_jax.training.step import final_hidden


@gin.configurable
@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """group_size: completions per prompt (G, at least 2: one has no advantage).
    clip_low, clip_high: the ratio's clip range [1 - clip_low, 1 + clip_high]
      (a clip_high above clip_low is DAPO's clip-higher).
    kl_coef: weight of the KL to a frozen reference (0: no reference is kept).
    updates_per_batch: policy updates on each batch of rollouts (GRPO's mu).
    dr_grpo: Dr. GRPO (advantages not divided by the std; each completion's token
      losses summed and divided by the token budget instead of its own length).
    std_eps: added to the group's std before dividing by it."""

    group_size: int = 8
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    updates_per_batch: int = 1
    dr_grpo: bool = False
    std_eps: float = 1e-4

    def __post_init__(self):
        if self.group_size < 2:
            raise ValueError(f"GRPOConfig.group_size must be at least 2 (a group of one has no advantage: its "
                             f"reward is its own mean), got {self.group_size}")
        if self.updates_per_batch < 1:
            raise ValueError(f"GRPOConfig.updates_per_batch must be at least 1, got {self.updates_per_batch}")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {self.clip_low}, {self.clip_high}")
        if self.kl_coef < 0:
            raise ValueError(f"GRPOConfig.kl_coef must be 0 or more, got {self.kl_coef}")


def group_advantages(rewards: np.ndarray, config: GRPOConfig) -> np.ndarray:
    """rewards [groups, G] -> advantages [groups, G]."""
    rewards = np.asarray(rewards, np.float64)
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    if config.dr_grpo:
        return centred.astype(np.float32)
    return (centred / (rewards.std(axis=1, keepdims=True) + config.std_eps)).astype(np.float32)


def token_logprobs(params, model: Decoder, batch: dict, frozen=None, dropout_rng=None,
                   chunk_length: int = 0) -> jax.Array:
    """log p(target token) at every position [rows, length], in float32. With
    chunk_length > 0 the output projection runs that many positions at a time
    (rematerialised), so the [rows, length, vocab] logits never exist at once."""
    from codeio_jax.models.decoder import vocab_logits

    hidden, kernel = final_hidden(params, model, batch, frozen, dropout_rng)
    targets = batch["decoder_target_tokens"]
    config = model.config

    def logp(h, t):
        logits = vocab_logits(config, h, kernel).astype(jnp.float32)
        picked = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
        return picked - jax.nn.logsumexp(logits, axis=-1)

    length = hidden.shape[1]
    if chunk_length <= 0 or chunk_length >= length:
        return logp(hidden, targets)
    chunks = -(-length // chunk_length)
    pad = chunks * chunk_length - length
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))

    def split(x):  # [rows, chunks * c, ...] -> [chunks, rows, c, ...]
        return jnp.swapaxes(x.reshape(x.shape[0], chunks, chunk_length, *x.shape[2:]), 0, 1)

    @jax.checkpoint
    def body(carry, chunk):
        return carry, logp(*chunk)

    _, out = jax.lax.scan(body, None, (split(hidden), split(targets)))
    return jnp.swapaxes(out, 0, 1).reshape(targets.shape[0], -1)[:, :length]


def grpo_loss(params, model: Decoder, batch: dict, frozen=None, dropout_rng=None, *, config: GRPOConfig,
              max_new_tokens: int, chunk_length: int = 0) -> tuple[jax.Array, dict]:
    """The GRPO loss of a batch of rollouts and its metrics."""
    logp = token_logprobs(params, model, batch, frozen, dropout_rng, chunk_length)
    mask = batch["decoder_loss_weights"].astype(jnp.float32)
    old = batch["old_logprobs"] if "old_logprobs" in batch else jax.lax.stop_gradient(logp)
    advantages = batch["advantages"][:, None]
    ratio = jnp.exp(logp - old)
    clipped_ratio = jnp.clip(ratio, 1.0 - config.clip_low, 1.0 + config.clip_high)
    per_token = -jnp.minimum(ratio * advantages, clipped_ratio * advantages)
    # Where the clipped term is the smaller one, the gradient is cut.
    clipped = ((advantages > 0) & (ratio > 1.0 + config.clip_high)) | (
        (advantages < 0) & (ratio < 1.0 - config.clip_low))
    tokens = jnp.maximum(mask.sum(), 1.0)
    to_sampler = old - logp
    metrics = {"clip_fraction": (clipped * mask).sum() / tokens, "ratio_mean": (ratio * mask).sum() / tokens,
               "kl_to_sampler": ((jnp.exp(to_sampler) - to_sampler - 1.0) * mask).sum() / tokens}
    if config.kl_coef > 0:
        delta = batch["ref_logprobs"] - logp
        kl = jnp.exp(delta) - delta - 1.0
        per_token = per_token + config.kl_coef * kl
        metrics["kl"] = (kl * mask).sum() / tokens
    lengths = mask.sum(axis=1)
    rows = jnp.maximum((lengths > 0).sum(), 1)
    if config.dr_grpo:
        per_row = (per_token * mask).sum(axis=1) / max_new_tokens
    else:
        per_row = (per_token * mask).sum(axis=1) / jnp.maximum(lengths, 1.0)
    loss = per_row.sum() / rows
    metrics["loss"] = loss
    return loss, metrics


def supervised_loss(params, model: Decoder, batch: dict, frozen=None, dropout_rng=None, *,
                    chunk_length: int = 0) -> tuple[jax.Array, dict]:
    """Cross-entropy on the completion tokens (the warm-up on reference answers)."""
    logp = token_logprobs(params, model, batch, frozen, dropout_rng, chunk_length)
    mask = batch["decoder_loss_weights"].astype(jnp.float32)
    loss = -(logp * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    return loss, {"loss": loss}
