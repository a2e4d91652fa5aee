"""Batched generation from token ids, compiled once per shape bucket.

    sampler = Sampler(config, params)
    sampler.generate([[1, 2, 3], [4, 5]], max_new_tokens=32)        # greedy
    sampler.generate(prompts, 64, temperature=0.7, top_p=0.9, seed=1)
    sampler.generate_rows(prompts, [SamplingParams(...), ...])      # per-row settings

Prompts of different lengths are right-padded and prefilled together (positions
0..T-1 in every row), each distinct prompt once however many rows ask for it,
then every row decodes at its own position inside one jitted `lax.while_loop`
(decode.py). Shapes are bucketed so that repeated calls
reuse compiled code: the batch to a power of two, the prefill length and the
cache length to 16, 24, 32, 48, 64, 96, ... (powers of two and the halfway
points between them, so a bucket wastes at most a third), and the stop lists to
powers of two (at least 4 ids, 4 sequences of 8). Per-row settings (budget, temperature, top-k, top-p, seed, stops)
are arrays, never compile-time constants; only greedy-or-sampling is.

Stopping follows the OpenAI API: a row stops at one of its stop token ids (EOS,
end of turn) or when its last generated tokens equal one of its stop sequences,
and the returned tokens leave that token or sequence out (`Completion.stop`
says which one it was; `completion_tokens` counts it, as it was generated).
Stop sequences only match generated tokens, never the prompt.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from codeio_jax.models.config import ModelConfig
from codeio_jax.models.decoder import Decoder
from codeio_jax.sampling import decode


class SamplingError(ValueError):
    """A request the sampler cannot serve as asked (empty prompt, too long, bad setting)."""


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How one row is generated. temperature 0 is greedy; top_k 0 and top_p 1 are off."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Completion:
    """One row's output. `tokens` leaves out the stop token or sequence that ended
    it (`stop`); `completion_tokens` is every token generated, the stop included."""

    tokens: list[int]
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    stop: int | tuple[int, ...] | None = None


def bucket(n: int, minimum: int = 16) -> int:
    """The smallest size >= n among minimum * 2^k and 1.5 * minimum * 2^k
    (minimum a power of two): 16, 24, 32, 48, 64, 96, ..."""
    size = minimum
    while True:
        for candidate in (size, size * 3 // 2):
            if candidate >= n:
                return candidate
        size *= 2


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class Sampler:
    """config, params: a decoder (e.g. from convert.load_hf).
    max_length: the longest prompt + new tokens a row may reach (default: the
      model's max_position_embeddings).
    prefill_chunk: prompts longer than this are prefilled this many tokens at a
      time, which bounds the prefill's activations (attention's batch x heads x
      chunk x length scores among them).
    """

    def __init__(self, config: ModelConfig, params, max_length: int | None = None, prefill_chunk: int = 512):
        if not _is_power_of_two(prefill_chunk) or prefill_chunk < 16:
            raise SamplingError(f"prefill_chunk must be a power of two >= 16, got {prefill_chunk}")
        self.config = config
        self.params = params
        self.max_length = max_length or config.max_position_embeddings
        self.prefill_chunk = prefill_chunk
        self._run = jax.jit(functools.partial(decode.generate, Decoder(config)),
                            static_argnames=("greedy", "prefill_len", "chunk"))

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, stop_token_ids: Sequence[int] = (),
                 stop_sequences: Sequence[Sequence[int]] = (), seed: int = 0) -> list[Completion]:
        """The same settings for every row; row i samples with seed + i (so equal
        prompts in one call still get different samples)."""
        settings = [SamplingParams(max_new_tokens, temperature, top_k, top_p, tuple(stop_token_ids),
                                   tuple(tuple(s) for s in stop_sequences), seed + i)
                    for i in range(len(prompts))]
        return self.generate_rows(prompts, settings)

    def generate_rows(self, prompts: Sequence[Sequence[int]],
                      settings: Sequence[SamplingParams]) -> list[Completion]:
        """One completion per prompt, each generated with its own settings."""
        if len(prompts) != len(settings):
            raise SamplingError(f"{len(prompts)} prompts but {len(settings)} settings")
        if not prompts:
            return []
        for i, (prompt, s) in enumerate(zip(prompts, settings)):
            self._check(i, prompt, s)
        longest = max(len(p) for p in prompts)
        need = max(len(p) + s.max_new_tokens for p, s in zip(prompts, settings))
        prefill_len = bucket(longest)
        if prefill_len > self.prefill_chunk:
            prefill_len = -(-prefill_len // self.prefill_chunk) * self.prefill_chunk
        cache_len = max(min(bucket(need), self.max_length), prefill_len)
        batch = _power_of_two(len(prompts))
        seq, rows, distinct, distinct_lengths = self._arrays(prompts, settings, batch, cache_len, prefill_len)
        greedy = all(s.temperature == 0 for s in settings)
        out, generated, finish = jax.device_get(self._run(self.params, seq, rows, distinct, distinct_lengths,
                                                          greedy=greedy, prefill_len=prefill_len,
                                                          chunk=self.prefill_chunk))
        return [self._completion(out[i], len(p), int(generated[i]), int(finish[i]), s)
                for i, (p, s) in enumerate(zip(prompts, settings))]

    def compiled_programs(self) -> int:
        """How many programs the jitted generation holds (one per bucket seen)."""
        return self._run._cache_size()

    def _check(self, i: int, prompt: Sequence[int], s: SamplingParams) -> None:
        vocab = self.config.vocab_size
        if not prompt:
            raise SamplingError(f"prompt {i} is empty: generation needs at least one token")
        if s.max_new_tokens < 1:
            raise SamplingError(f"prompt {i}: max_new_tokens must be at least 1, got {s.max_new_tokens}")
        if len(prompt) + s.max_new_tokens > self.max_length:
            raise SamplingError(f"prompt {i}: {len(prompt)} prompt tokens + {s.max_new_tokens} new tokens exceed "
                                f"the maximum length {self.max_length}")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise SamplingError(f"prompt {i}: token ids must lie in [0, {vocab})")
        if s.temperature < 0 or s.top_k < 0 or not 0 < s.top_p <= 1:
            raise SamplingError(f"prompt {i}: need temperature >= 0, top_k >= 0 and 0 < top_p <= 1, got "
                                f"{s.temperature}, {s.top_k}, {s.top_p}")
        if any(not seq for seq in s.stop_sequences):
            raise SamplingError(f"prompt {i}: a stop sequence is empty")

    def _arrays(self, prompts, settings, batch: int, cache_len: int, prefill_len: int):
        """(seq, rows, the distinct prompts, their lengths) as decode.generate takes them."""
        n = len(prompts)
        first_of: dict[tuple[int, ...], int] = {}
        prompt_row = [first_of.setdefault(tuple(p), len(first_of)) for p in prompts]
        distinct = np.zeros((_power_of_two(len(first_of)), prefill_len), np.int32)
        distinct_lengths = np.ones(distinct.shape[0], np.int32)  # the padding rows: one token 0
        for prompt, row in first_of.items():
            distinct[row, :len(prompt)] = prompt
            distinct_lengths[row] = len(prompt)
        # Floors that cover the usual requests (a few end ids, OpenAI's 4 stop
        # strings of a few tokens), so that they all share one program.
        stop_ids = max(4, _power_of_two(max(len(s.stop_token_ids) for s in settings)))
        stop_count = max(4, _power_of_two(max(len(s.stop_sequences) for s in settings)))
        stop_width = max(8, _power_of_two(max((len(q) for s in settings for q in s.stop_sequences), default=1)))
        seq = np.zeros((batch, cache_len), np.int32)
        ids = np.full((batch, stop_ids), -1, np.int32)
        seqs = np.full((batch, stop_count, stop_width), -1, np.int32)
        lens = np.zeros((batch, stop_count), np.int32)
        for i, (prompt, s) in enumerate(zip(prompts, settings)):
            seq[i, :len(prompt)] = prompt
            ids[i, :len(s.stop_token_ids)] = s.stop_token_ids
            for j, q in enumerate(s.stop_sequences):
                seqs[i, j, :len(q)] = q
                lens[i, j] = len(q)

        def column(values, dtype, fill):
            return np.array(list(values) + [fill] * (batch - n), dtype)

        rows = decode.RowSettings(
            lengths=column((len(p) for p in prompts), np.int32, 1),
            prompt=column(prompt_row, np.int32, 0),
            active=column((True for _ in prompts), np.bool_, False),
            max_new=column((s.max_new_tokens for s in settings), np.int32, 1),
            temperature=column((s.temperature for s in settings), np.float32, 0.0),
            top_k=column((s.top_k for s in settings), np.int32, 0),
            top_p=column((s.top_p for s in settings), np.float32, 1.0),
            # PRNGKey takes 32 bits under the default (no x64) mode: fold larger seeds in.
            seeds=column((s.seed % (1 << 32) for s in settings), np.uint32, 0),
            stop_ids=ids, stop_seqs=seqs, stop_lens=lens)
        return (jnp.asarray(seq), jax.tree_util.tree_map(jnp.asarray, rows), jnp.asarray(distinct),
                jnp.asarray(distinct_lengths))

    @staticmethod
    def _completion(row: np.ndarray, prompt_len: int, generated: int, finish: int,
                    s: SamplingParams) -> Completion:
        tokens = [int(t) for t in row[prompt_len:prompt_len + generated]]
        if finish == decode.FINISH_STOP_TOKEN:
            return Completion(tokens[:-1], "stop", prompt_len, generated, tokens[-1])
        if finish >= decode.FINISH_STOP_SEQUENCE:
            stop = s.stop_sequences[finish - decode.FINISH_STOP_SEQUENCE]
            return Completion(tokens[:-len(stop)], "stop", prompt_len, generated, tuple(stop))
        return Completion(tokens, "length", prompt_len, generated)
