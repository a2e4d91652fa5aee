"""A teacher that runs a model in this process: our sampler, no server.

    teacher = LocalTeacher("models/qwen2.5-coder-7b-instruct", max_new_tokens=1024)
    replies = teacher.reply(conversations)

Conversations are rendered with the family's chat template, sorted by prompt
length (rows of one batch then pad little) and generated `batch_size` at a time.
Each conversation's seed is derived from (seed, its prompt): a conversation gets
the same reply whatever else is in the batch and however often it is asked.
A conversation that cannot be answered (a malformed chat, a prompt too long)
gets a failed Reply; the others still run.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Sequence

from codeio_jax.sampling.chat import CHAT_FAMILY, ChatModel, ChatRequest, end_token_ids
from codeio_jax.sampling.sampler import Sampler, SamplingParams
from codeio_jax.teachers.base import Message, Reply, Usage


class LocalTeacher:
    """model: a Hugging Face folder (config.json, safetensors, tokenizer.json), or
      (config, params) with `tokenizer` and `family` given.
    tokenizer: a `tokenizers.Tokenizer` or a tokenizer.json path (default: the folder's).
    family: force one of our chat templates (default: a folder's own template, else the model's family's).
    stop_token_ids: where replies end (default: EOS and the family's end of turn).
    """

    def __init__(self, model: str | Path | tuple[Any, dict], tokenizer: Any = None, family: str | None = None,
                 max_new_tokens: int = 1024, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                 seed: int = 0, batch_size: int = 8, max_length: int | None = None,
                 stop_token_ids: Sequence[int] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(tokenizer, (str, Path)):
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(tokenizer))
        if isinstance(model, (str, Path)):
            chat = ChatModel.from_folder(model, family, max_length, tokenizer)
            if stop_token_ids is not None:
                chat.stop_token_ids = tuple(stop_token_ids)
        else:
            config, params = model
            if tokenizer is None:
                raise ValueError("a model given as (config, params) needs its tokenizer")
            family = family or CHAT_FAMILY[config.family]
            stops = end_token_ids(None, tokenizer, family) if stop_token_ids is None else stop_token_ids
            chat = ChatModel(Sampler(config, params, max_length), tokenizer, family, stops)
        self.chat = chat
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                     top_p=top_p)
        self.seed = seed
        self.batch_size = batch_size
        self.usage = Usage()

    def reply(self, conversations: Sequence[Sequence[Message]]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(conversations)
        ready: list[tuple[int, ChatRequest]] = []
        budget = self.params.max_new_tokens
        for i, messages in enumerate(conversations):
            try:
                prompt = self.chat.encode(messages)
            except ValueError as exc:
                replies[i] = Reply(error=f"cannot render the chat: {exc}")
                continue
            if len(prompt) + budget > self.chat.max_length:
                replies[i] = Reply(error=f"the prompt has {len(prompt)} tokens: with {budget} new tokens it "
                                         f"exceeds the model's {self.chat.max_length}")
                continue
            params = dataclasses.replace(self.params, seed=derive_seed(self.seed, prompt))
            ready.append((i, ChatRequest(prompt, params)))
        ready.sort(key=lambda item: len(item[1].prompt))
        for start in range(0, len(ready), self.batch_size):
            batch = ready[start:start + self.batch_size]
            for (i, _), result in zip(batch, self.chat.complete([request for _, request in batch])):
                replies[i] = Reply(text=result.text, finish_reason=result.finish_reason,
                                   prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
                self.usage.add(requests=1, prompt_tokens=result.prompt_tokens,
                               completion_tokens=result.completion_tokens)
        self.usage.add(failed=sum(r.error is not None for r in replies if r is not None))
        return replies  # type: ignore[return-value]

    def close(self) -> None:
        """Nothing to release (the Teacher context protocol of the other teachers)."""

    def __enter__(self) -> "LocalTeacher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def derive_seed(seed: int, prompt: Sequence[int]) -> int:
    """A 32-bit seed from (seed, prompt ids)."""
    digest = hashlib.sha256(f"{seed}:{','.join(map(str, prompt))}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
