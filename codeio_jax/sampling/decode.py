"""The compiled core of generation: prefill, then a `lax.while_loop` of decode steps.

Everything per row is an array (prompt length, token budget, temperature, top-k,
top-p, seed, stop ids, stop sequences), so rows with different settings share one
batch and one compiled program; only the shapes and three switches (greedy or
not, the prefill length, the prefill chunk) are static, and sampler.py buckets
the shapes.

Rows that ask for the same prompt (a GRPO group, a prompt sampled several times)
share its prefill: each distinct prompt is prefilled once and every row starts
from a copy of its prompt's cache. On a small model the prefill of long prompts
is most of a rollout's work, so a group of 8 pays for it once instead of 8 times.

The sequence buffer `seq` [batch, cache_len] holds each row's prompt followed by
its generated tokens: token at position p sits in slot p, like the cache. Rows
sit at their own positions; a finished row stops changing (its updates are
masked) while the others run on.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from codeio_jax.models.decoder import Decoder, init_cache, output_kernel, vocab_logits

Array = jax.Array

# finish codes: 0 ran out of budget ("length"), 1 a stop token, 2 + s stop sequence s.
FINISH_LENGTH, FINISH_STOP_TOKEN, FINISH_STOP_SEQUENCE = 0, 1, 2
MIN_VIEW = 128  # the smallest cache a decode phase reads (see generate)


class RowSettings(NamedTuple):
    """Per-row inputs, every field [batch, ...]."""

    lengths: Array  # prompt tokens per row (>= 1)
    prompt: Array  # the row of `prompts` (generate's) that holds this row's prompt
    active: Array  # False for the rows that only pad the batch to its bucket
    max_new: Array  # token budget per row
    temperature: Array  # 0: greedy
    top_k: Array  # 0: off
    top_p: Array  # 1: off
    seeds: Array  # uint32
    stop_ids: Array  # [batch, E], -1 for none
    stop_seqs: Array  # [batch, S, L], -1 padded
    stop_lens: Array  # [batch, S], 0 for none


class State(NamedTuple):
    cache: list
    seq: Array  # [batch, cache_len]
    length: Array  # tokens in the row so far, prompt included
    generated: Array
    done: Array
    finish: Array
    logits: Array  # [batch, vocab] float32: the next token's


def generate(model: Decoder, params, seq: Array, rows: RowSettings, prompts: Array, prompt_lengths: Array, *,
             greedy: bool, prefill_len: int, chunk: int) -> tuple[Array, Array, Array]:
    """(seq, generated tokens per row, finish code per row). `seq` comes in with
    each row's prompt right-padded to cache_len; `prompts` [distinct, prefill_len]
    holds each distinct prompt once (prompt_lengths: its tokens), and is what the
    prefill runs on; prefill_len is a multiple of `chunk` or less than it."""
    batch, cache_len = seq.shape
    cache = init_cache(model.config, prompts.shape[0], prefill_len)
    cache, logits = _prefill(model, params, prompts, prompt_lengths, cache, chunk)
    # Every row starts from its prompt's cache and next-token logits.
    cache = jax.tree_util.tree_map(lambda a: jnp.take(a, rows.prompt, axis=0), cache)
    logits = jnp.take(logits, rows.prompt, axis=0)
    state = State(cache, seq, rows.lengths, jnp.zeros_like(rows.lengths), ~rows.active,
                  jnp.zeros_like(rows.lengths), logits)
    state = _emit(state, rows, greedy)

    def step(state: State) -> State:
        # The token just emitted sits at position length - 1: feed it, then choose the next.
        positions = (state.length - 1)[:, None]
        token = jnp.take_along_axis(state.seq, positions, axis=1)
        logits, cache = model.apply({"params": params}, token, positions, None, state.cache)
        return _emit(state._replace(cache=cache, logits=logits[:, -1].astype(jnp.float32)), rows, greedy)

    # Every decode step reads the whole cache, and reading it is what a step
    # mostly costs once the weights are small or shared by a big batch. So the
    # cache grows with the rows, doubling: each phase runs while every running
    # row fits in it, and a step reads at most twice the slots in use (or
    # MIN_VIEW, or the last bucket's slack). Each phase compiles the step anew,
    # which the floor of MIN_VIEW slots keeps to a few phases.
    size = prefill_len
    for view in _views(prefill_len, cache_len):
        if view > size:
            state, size = state._replace(cache=_grow(state.cache, view)), view

        def fits(s: State, view=view) -> Array:
            return ~jnp.all(s.done) & (jnp.max(jnp.where(s.done, 0, s.length)) <= view)

        state = jax.lax.while_loop(fits, step, state)
    return state.seq, state.generated, state.finish


def _views(prefill_len: int, cache_len: int) -> list[int]:
    """The cache sizes of the decode phases: at least MIN_VIEW, doubling up to cache_len."""
    views = [min(max(prefill_len, MIN_VIEW), cache_len)]
    while views[-1] < cache_len:
        views.append(min(2 * views[-1], cache_len))
    return views


def _grow(cache: list, slots: int) -> list:
    """Every cache array padded to `slots` along its slot axis (1)."""
    return jax.tree_util.tree_map(
        lambda a: jnp.pad(a, [(0, 0), (0, slots - a.shape[1])] + [(0, 0)] * (a.ndim - 2)), cache)


def _prefill(model: Decoder, params, tokens: Array, lengths: Array, cache: list, chunk: int):
    """Run the prompts through in chunks of `chunk` tokens (a scan, so one compiled
    body), keeping only each row's last real position's hidden state; the output
    layer runs on that one position: logits for every prompt position would cost
    batch x length x vocab of memory and as many multiply-adds, for nothing."""
    batch, length = tokens.shape
    size = min(chunk, length)
    pieces = tokens.reshape(batch, length // size, size).transpose(1, 0, 2)

    def body(carry, inputs):
        cache, last = carry
        i, piece = inputs
        start = i * size
        positions = jnp.broadcast_to(start + jnp.arange(size)[None, :], piece.shape)
        hidden, cache = model.apply({"params": params}, piece, positions, None, cache, return_hidden=True)
        index = lengths - 1 - start
        inside = (index >= 0) & (index < size)
        picked = jnp.take_along_axis(hidden, jnp.clip(index, 0, size - 1)[:, None, None], axis=1)
        return (cache, jnp.where(inside[:, None, None], picked, last)), None

    last = jnp.zeros((batch, 1, model.config.hidden_size), jnp.dtype(model.config.dtype))
    (cache, last), _ = jax.lax.scan(body, (cache, last), (jnp.arange(pieces.shape[0]), pieces))
    kernel = nn.meta.unbox(output_kernel(model.config, params))
    return cache, vocab_logits(model.config, last, kernel)[:, 0].astype(jnp.float32)


def _emit(state: State, rows: RowSettings, greedy: bool) -> State:
    """Choose every running row's next token, append it, and settle which rows stop."""
    batch, cache_len = state.seq.shape
    running = ~state.done
    token = _choose(state.logits, state.generated, rows, greedy)
    at = jnp.minimum(state.length, cache_len - 1)
    current = jnp.take_along_axis(state.seq, at[:, None], axis=1)[:, 0]
    seq = state.seq.at[jnp.arange(batch), at].set(jnp.where(running, token, current))
    length = state.length + running
    generated = state.generated + running

    hit_token = jnp.any(rows.stop_ids == token[:, None], axis=1)
    # Stop sequence s matches when the last stop_lens[s] generated tokens equal it.
    window = rows.stop_seqs.shape[-1]
    offsets = length[:, None, None] - rows.stop_lens[:, :, None] + jnp.arange(window)[None, None, :]
    tails = jnp.take_along_axis(seq[:, None, :], jnp.clip(offsets, 0, cache_len - 1), axis=2)
    used = jnp.arange(window)[None, None, :] < rows.stop_lens[:, :, None]
    matches = (jnp.all((tails == rows.stop_seqs) | ~used, axis=2) & (rows.stop_lens > 0)
               & (rows.stop_lens <= generated[:, None]))
    hit_sequence = jnp.any(matches, axis=1)
    code = jnp.where(hit_token, FINISH_STOP_TOKEN,
                     jnp.where(hit_sequence, FINISH_STOP_SEQUENCE + jnp.argmax(matches, axis=1), FINISH_LENGTH))
    ends = hit_token | hit_sequence | (generated >= rows.max_new) | (length >= cache_len)
    return state._replace(seq=seq, length=length, generated=generated,
                          finish=jnp.where(running, code, state.finish), done=state.done | (running & ends))


def _choose(logits: Array, generated: Array, rows: RowSettings, greedy: bool) -> Array:
    """Greedy (argmax), or a sample after temperature, top-k and top-p, with a key
    from the row's seed folded with its step: a row's tokens depend on its own
    prompt, settings and seed, never on the rows batched with it."""
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if greedy:
        return best
    hot = rows.temperature > 0
    scaled = logits / jnp.where(hot, rows.temperature, 1.0)[:, None]
    # The sort top-k and top-p need costs more than the rest of a small model's step on a
    # CPU (a vocabulary of 49,152 per row); a batch that asks for neither skips it.
    filtering = jnp.any(rows.top_k > 0) | jnp.any(rows.top_p < 1.0)
    filtered = jax.lax.cond(filtering, _top_k_top_p, lambda scaled, rows: scaled, scaled, rows)
    keys = jax.vmap(lambda seed, step: jax.random.fold_in(jax.random.PRNGKey(seed), step))(rows.seeds, generated)
    sampled = jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)
    return jnp.where(hot, sampled, best)


def _top_k_top_p(scaled: Array, rows: RowSettings) -> Array:
    """The logits with every token outside a row's top-k and top-p set to -inf."""
    vocab = scaled.shape[-1]
    ranked = -jnp.sort(-scaled, axis=-1)  # descending
    k = jnp.where(rows.top_k > 0, jnp.minimum(rows.top_k, vocab), vocab)
    within_k = jnp.arange(vocab)[None, :] < k[:, None]
    probs = jax.nn.softmax(jnp.where(within_k, ranked, -jnp.inf), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always).
    before = jnp.cumsum(probs, axis=-1) - probs
    keep = within_k & (before < rows.top_p[:, None])
    kept = jnp.maximum(jnp.sum(keep, axis=-1), 1)
    threshold = jnp.take_along_axis(ranked, (kept - 1)[:, None], axis=1)
    return jnp.where(scaled >= threshold, scaled, -jnp.inf)
