"""Chats in, text out: the sampler with a tokenizer and a chat template.

`ChatModel` is what the local teacher and the server share: it renders a chat
with the model folder's own chat template (models/chat_template.py) or, where
the folder has none or a family is asked for, the family's
(models/chat_format.py), the generation prompt appended; encodes it with a
`tokenizers.Tokenizer` (tokenizer.json), generates a batch of rows, and decodes
each back to text.

Stopping: every row stops at the model's end tokens (EOS and the family's end
of turn, found in generation_config.json, config.json, tokenizer_config.json
and the tokenizer's vocabulary). Stop *strings* are matched twice: as token
sequences inside the compiled loop (their tokenization alone, which stops a row
early in the common case), and on the decoded text, which is cut before the
first stop string found; the text never contains one, as in the OpenAI API.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from codeio_jax.sampling.sampler import Sampler, SamplingParams
from codeio_jax.models import chat_format
from codeio_jax.models.chat_template import FolderChatTemplate

# Our model family -> its chat template family (models/chat_format.py).
CHAT_FAMILY = {"llama": "llama3", "qwen2": "qwen2", "gemma2": "gemma2", "deepseek_v2": "deepseek_v2"}
END_OF_TURN = {"llama3": "<|eot_id|>", "qwen2": "<|im_end|>", "gemma2": "<end_of_turn>",
               "deepseek_v2": chat_format.DEEPSEEK_EOS}


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    prompt: list[int]
    params: SamplingParams
    stop_strings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    # Every generated token, the stop token or sequence that ended the row included
    # (what a policy update trains on; `text` is cut at a stop string, these are not).
    tokens: tuple[int, ...] = ()


class ChatModel:
    """sampler: generates token ids. tokenizer: a `tokenizers.Tokenizer`.
    family: one of our chat templates (models/chat_format.py), or None with `template`.
    stop_token_ids: the ids every row stops at (see `end_token_ids`).
    template: a folder's own chat template, used instead of the family's."""

    def __init__(self, sampler: Sampler, tokenizer: Any, family: str | None, stop_token_ids: Sequence[int],
                 template: FolderChatTemplate | None = None):
        if template is None and family not in END_OF_TURN:
            raise ValueError(f"unknown chat family {family!r}; expected one of {', '.join(END_OF_TURN)}")
        self.sampler = sampler
        self.tokenizer = tokenizer
        self.family = family if template is None else None
        self.template = template
        self.stop_token_ids = tuple(stop_token_ids)

    @classmethod
    def from_folder(cls, folder: str | Path, family: str | None = None, max_length: int | None = None,
                    tokenizer: Any = None) -> "ChatModel":
        """A Hugging Face folder: config.json, safetensors and tokenizer.json. Its own
        chat template when it has one, unless `family` forces one of ours."""
        from codeio_jax.models import convert

        config, params = convert.load_hf(folder)
        return cls.with_folder_chat(Sampler(config, params, max_length), folder, family, tokenizer)

    @classmethod
    def with_folder_chat(cls, sampler: Sampler, folder: str | Path, family: str | None = None,
                         tokenizer: Any = None) -> "ChatModel":
        """`sampler` speaking as the folder's model: its tokenizer.json, its own chat
        template when it has one (unless `family` forces one of ours), its end tokens."""
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(folder)
        template = FolderChatTemplate.from_folder(folder) if family is None else None
        if template is None:
            family = family or CHAT_FAMILY[sampler.config.family]
        return cls(sampler, tokenizer, family, end_token_ids(folder, tokenizer, family), template)

    @property
    def template_name(self) -> str:
        """What renders the chats, for a user to read."""
        return f"the folder's chat template ({self.template.origin})" if self.template else f"{self.family} template"

    @property
    def max_length(self) -> int:
        return self.sampler.max_length

    def encode(self, messages: Sequence[dict]) -> list[int]:
        """The chat's prompt ids; ValueError (from the template) for a malformed chat."""
        if self.template is not None:
            text = self.template.render(messages, add_generation_prompt=True)
        else:
            text = chat_format.render(messages, self.family, add_generation_prompt=True)
        # The rendered text already holds BOS and every marker: add nothing.
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """One generate call for all the requests (they must fit one batch)."""
        settings = []
        for r in requests:
            sequences = {tuple(self.tokenizer.encode(s, add_special_tokens=False).ids) for s in r.stop_strings}
            settings.append(dataclasses.replace(
                r.params, stop_token_ids=tuple(r.params.stop_token_ids) + self.stop_token_ids,
                stop_sequences=tuple(r.params.stop_sequences) + tuple(sorted(s for s in sequences if s))))
        completions = self.sampler.generate_rows([r.prompt for r in requests], settings)
        results = []
        for r, c in zip(requests, completions):
            text = self.tokenizer.decode(c.tokens, skip_special_tokens=True)
            cut = min((i for i in (text.find(s) for s in r.stop_strings) if i >= 0), default=-1)
            finish = c.finish_reason
            if cut >= 0:
                text, finish = text[:cut], "stop"
            ended_by = () if c.stop is None else (c.stop,) if isinstance(c.stop, int) else c.stop
            results.append(ChatResult(text, finish, c.prompt_tokens, c.completion_tokens,
                                      tuple(c.tokens) + tuple(ended_by)))
        return results


def load_tokenizer(folder: str | Path):
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no tokenizer.json")
    return Tokenizer.from_file(str(path))


def end_token_ids(folder: str | Path | None, tokenizer: Any, family: str | None) -> list[int]:
    """The ids a reply ends at: the family's end-of-turn token (none for a folder's
    own template) and the EOS ids of the folder's generation_config.json /
    config.json / tokenizer_config.json."""
    ids: list[int] = []
    names = [END_OF_TURN[family]] if family is not None else []
    for name in ("generation_config.json", "config.json", "tokenizer_config.json"):
        path = Path(folder) / name if folder is not None else None
        if path is None or not path.exists():
            continue
        eos = json.loads(path.read_text()).get("eos_token_id" if name != "tokenizer_config.json" else "eos_token")
        for value in eos if isinstance(eos, list) else [eos]:
            if isinstance(value, int):
                ids.append(value)
            elif isinstance(value, str):
                names.append(value)
            elif isinstance(value, dict) and isinstance(value.get("content"), str):
                names.append(value["content"])  # an AddedToken written out
    ids += [i for i in (tokenizer.token_to_id(n) for n in names) if i is not None]
    return sorted(set(ids))
