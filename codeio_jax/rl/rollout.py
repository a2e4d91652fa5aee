"""Rollouts: G completions per prompt from our KV-cache sampler, as training rows.

The sampler runs on the policy's own parameters (the train state's, on the same
mesh; with LoRA the base with the adapters merged), so no second copy of the
weights is kept for generation. Each completion's seed is derived from (seed,
step, prompt id, its index in the group): a resumed run samples what the
uninterrupted one sampled.

A training row is the prompt's ids followed by every generated token, the stop
token included (so the policy learns where to stop); the loss falls on the
generated tokens only. Rows are right-padded to a bucketed length (sampler's
buckets), so repeated steps reuse a few compiled programs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

from codeio_jax.rl.prompts import RLPrompt
from codeio_jax.sampling.chat import ChatModel, ChatRequest
from codeio_jax.sampling.sampler import SamplingParams, bucket


@dataclasses.dataclass(frozen=True)
class Completion:
    prompt: RLPrompt
    prompt_ids: tuple[int, ...]
    tokens: tuple[int, ...]  # generated, the stop token included
    text: str
    finish_reason: str


def derive_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little") >> 1


def encode(chat: ChatModel, prompt: RLPrompt, max_new_tokens: int) -> tuple[int, ...] | str:
    """The prompt's ids, or why it cannot be asked (a malformed chat, too long)."""
    try:
        ids = chat.encode(list(prompt.messages))
    except ValueError as exc:
        return f"cannot render the chat: {exc}"
    if len(ids) + max_new_tokens > chat.max_length:
        return (f"the prompt has {len(ids)} tokens: with {max_new_tokens} new tokens it exceeds the model's "
                f"{chat.max_length}")
    return tuple(ids)


def sample_groups(chat: ChatModel, prompts: Sequence[RLPrompt], prompt_ids: Sequence[tuple[int, ...]],
                  group_size: int, params: SamplingParams, seed: int, step: int | str) -> list[list[Completion]]:
    """group_size completions of each prompt, in one generate call (each with its own seed)."""
    requests = [ChatRequest(list(ids), dataclasses.replace(params, seed=derive_seed(seed, step, prompt.id, g)))
                for prompt, ids in zip(prompts, prompt_ids) for g in range(group_size)]
    results = chat.complete(requests)
    groups = []
    for index, (prompt, ids) in enumerate(zip(prompts, prompt_ids)):
        group = results[index * group_size:(index + 1) * group_size]
        groups.append([Completion(prompt, ids, r.tokens, r.text, r.finish_reason) for r in group])
    return groups


def training_rows(rows: Sequence[tuple[Sequence[int], Sequence[int]]], batch_rows: int) -> dict[str, np.ndarray]:
    """(prompt ids, completion ids) per row -> the trainer's decoder_* features,
    `batch_rows` rows (the rest padding, weight 0), the loss on the completions."""
    if len(rows) > batch_rows:
        raise ValueError(f"{len(rows)} rows do not fit a batch of {batch_rows}")
    length = bucket(max(len(p) + len(c) for p, c in rows) - 1)
    batch = {name: np.zeros((batch_rows, length), np.int32) for name in (
        "decoder_input_tokens", "decoder_target_tokens", "decoder_segment_ids", "decoder_positions")}
    weights = np.zeros((batch_rows, length), np.float32)
    for i, (prompt, completion) in enumerate(rows):
        sequence = np.asarray(list(prompt) + list(completion), np.int32)
        n = len(sequence) - 1
        batch["decoder_input_tokens"][i, :n] = sequence[:-1]
        batch["decoder_target_tokens"][i, :n] = sequence[1:]
        batch["decoder_segment_ids"][i, :n] = 1
        batch["decoder_positions"][i, :n] = np.arange(n)
        weights[i, len(prompt) - 1:n] = 1.0  # the positions whose next token was generated
    batch["decoder_loss_weights"] = weights
    return batch
