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
"""

from __future__ import annotations

import datetime
import functools
import json
from pathlib import Path
from typing import Any, Sequence

SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token")
TEMPLATE_FILE = "chat_template.jinja"
CONFIG_FILE = "tokenizer_config.json"


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

    def __repr__(self) -> str:
        return f"FolderChatTemplate({self.origin})"


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
