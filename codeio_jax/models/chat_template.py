"""A model folder's own chat template, rendered as transformers renders it.

Every Hugging Face instruct model carries the template it was trained with: the
`chat_template` of its tokenizer_config.json, or a chat_template.jinja beside it
(our GGUF export writes the former). SmolLM2 speaks ChatML, not the Llama 3
format its architecture would suggest, so a folder's template wins over the
family's (models/chat_format.py) wherever a chat is rendered for a model.

Rendering follows transformers' `apply_chat_template(..., tokenize=False)`:
jinja2's immutable sandbox with `trim_blocks` and `lstrip_blocks` and loop
controls, a `tojson` filter that does not escape HTML, `raise_exception` and
`strftime_now`, and the template sees `messages`, `add_generation_prompt` and
the folder's special tokens (`bos_token`, `eos_token`, `pad_token`,
`unk_token`). Tools, documents and `{% generation %}` blocks are not offered:
a template that needs them fails with a TemplateError saying so.

`segments` cuts a rendered chat into the pieces the loss falls on and those it
does not, by the rule of chat_format.segments: an assistant message's content
and the end-of-turn marker after it are trained, its role header is not. The
pieces are found on the rendered text by rendering prefixes of the chat, which
needs a prefix-stable template; one that is not raises instead of mis-masking.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

from codeio_jax.models.chat_format import Segment, checked_messages, merge_segments

SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token")
TEMPLATE_FILE = "chat_template.jinja"
CONFIG_FILE = "tokenizer_config.json"
# Stands in for an assistant message's content to find where the template writes it.
CONTENT_PROBE = "codeioContentProbe7f3a9c"



class ChatTemplateError(ValueError):
    """A folder's chat template that cannot be read or rendered."""


class FolderChatTemplate:
    """source: the jinja text; special_tokens: the strings it may name."""

    def __init__(self, source: str, special_tokens: dict[str, str], origin: str = "a chat template"):
        self.source = source
        self.special_tokens = dict(special_tokens)
        self.origin = origin
        self._compiled = _compile(source, origin)

    @classmethod
    def from_folder(cls, folder: str | Path) -> "FolderChatTemplate | None":
        """The folder's template (chat_template.jinja first, as transformers reads
        it, then tokenizer_config.json's), or None when it has none."""
        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        config = {}
        if config_path.exists():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ChatTemplateError(f"{config_path} is not JSON: {exc}") from None
        specials = {name: _token_text(config.get(name)) for name in SPECIAL_TOKENS}
        specials = {name: text for name, text in specials.items() if text is not None}
        if (folder / TEMPLATE_FILE).exists():
            return cls((folder / TEMPLATE_FILE).read_text(encoding="utf-8"), specials, str(folder / TEMPLATE_FILE))
        source = config.get("chat_template")
        if isinstance(source, list):  # several named templates: the default one is the chat template
            source = next((item.get("template") for item in source
                           if isinstance(item, dict) and item.get("name") == "default"), None)
        if not source:
            return None
        if not isinstance(source, str):
            raise ChatTemplateError(f"{config_path}: chat_template must be a string, got {type(source).__name__}")
        return cls(source, specials, f"{config_path}'s chat_template")

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        import jinja2

        try:
            return self._compiled.render(messages=[dict(m) for m in messages],
                                         add_generation_prompt=add_generation_prompt, **self.special_tokens)
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"{self.origin} could not render this chat: {exc}") from None

    def segments(self, messages: Sequence[dict]) -> list[Segment]:
        """`render(messages)` cut into consecutive pieces, each with whether it is
        assistant-generated text the loss should fall on: each assistant message's
        content as the template writes it (trimmed, if the template trims) plus what
        the template writes after it, less the whitespace that ends it (the end-of-turn
        marker: ChatML's `<|im_end|>` without the newline after it, as in
        chat_format.segments; the model stops at the marker). Never the role header,
        nor a default system message the template adds. Neighbouring pieces differ in
        the flag.

        Found by rendering prefixes: for each assistant message i,
        render(messages[:i], add_generation_prompt=True) must be the start of
        render(messages[:i + 1]), which must be the start of render(messages)
        (the generation prompt a model is sampled with is the header it was trained
        after, and no later turn rewrites an earlier one). A template that breaks
        this raises ChatTemplateError. The message at i is rendered once more with a
        probe for its content, to tell the header and the marker from the content."""
        chat = _checked(messages)
        whole = self.render(chat)
        spans: list[tuple[int, int]] = []  # [start, end) of each trained piece in `whole`
        for i, message in enumerate(chat):
            if message["role"] != "assistant":
                continue
            # An assistant message first: no prefix to render (templates read messages[0]).
            prompt = self.render(chat[:i], add_generation_prompt=True) if i else ""
            through = self.render(chat[:i + 1])
            probed = self.render(chat[:i] + [{**message, "content": CONTENT_PROBE}])
            if not through.startswith(prompt) or not probed.startswith(prompt):
                raise ChatTemplateError(
                    f"{self.origin} is not prefix-stable: the chat up to message {i} with the generation prompt "
                    f"does not render as the start of the chat through message {i} (the generation prompt is not "
                    "the header of the assistant turn it opens), so its loss mask cannot be found")
            if not whole.startswith(through):
                raise ChatTemplateError(
                    f"{self.origin} is not prefix-stable: the chat through message {i} does not render as the "
                    "start of the whole chat (a later turn changes how an earlier one is written), so its loss "
                    "mask cannot be found")
            turn, probe = through[len(prompt):], probed[len(prompt):]
            if probe.count(CONTENT_PROBE) != 1:
                raise ChatTemplateError(f"{self.origin} writes the content of assistant message {i} "
                                        f"{probe.count(CONTENT_PROBE)} times; expected once")
            head, tail = probe.split(CONTENT_PROBE)
            if len(turn) < len(head) + len(tail) or not (turn.startswith(head) and turn.endswith(tail)):
                raise ChatTemplateError(f"{self.origin} writes the header or the end of assistant message {i} "
                                        "differently for different contents, so its loss mask cannot be found")
            start = len(prompt) + len(head)
            end = len(through) - len(tail) + len(tail.rstrip())
            if spans and start < spans[-1][1]:
                raise ChatTemplateError(f"{self.origin}: assistant message {i} starts before the end of the one "
                                        "before it; the template is not prefix-stable")
            spans.append((start, end))
        pieces: list[Segment] = []
        cursor = 0
        for start, end in spans:
            pieces += [(whole[cursor:start], False), (whole[start:end], True)]
            cursor = end
        pieces.append((whole[cursor:], False))
        return merge_segments(pieces)

    def __repr__(self) -> str:
        return f"FolderChatTemplate({self.origin})"


def folder_template(folder: str | Path) -> FolderChatTemplate:
    """The template of a local model folder that must have one (the SeqIO tasks'
    `chat_template`); ChatTemplateError saying what is missing otherwise."""
    if "://" in str(folder):
        raise ChatTemplateError(f"chat template folder {folder}: must be a local folder (copy the model's "
                                f"{CONFIG_FILE} and {TEMPLATE_FILE}, if any, beside the run)")
    if not Path(folder).is_dir():
        raise ChatTemplateError(f"chat template folder {folder} does not exist")
    template = FolderChatTemplate.from_folder(folder)
    if template is None:
        raise ChatTemplateError(f"{folder} has no chat template: neither {TEMPLATE_FILE} nor a chat_template "
                                f"in {CONFIG_FILE}; pass no chat_template to use the family's")
    return template


def _checked(messages: Sequence[Mapping]) -> list[dict]:
    """Copies of the messages, or a ValueError naming the one that is no chat message (any role)."""
    return checked_messages(messages, roles=None)


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


@functools.lru_cache(maxsize=16)
def _compile(source: str, origin: str):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja2's own tojson escapes <, > and & for HTML; a chat template means the characters.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.datetime.now().strftime(format)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[jinja2.ext.loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"{origin} is not a template we can render (line {exc.lineno}: {exc.message}); "
                                "tool, document and {% generation %} blocks are not supported") from None
