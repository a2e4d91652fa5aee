"""A chat rendered as the exact text a model family's Hugging Face chat template produces.

The SeqIO tasks need the text byte for byte as `tokenizer.apply_chat_template(...,
tokenize=False)` makes it (a model fine-tuned on other bytes sees a format it never
learnt), but the package must stay light: this is plain string building, no jinja2 and
no transformers. tests/models/test_chat_format.py holds the real templates and checks
every renderer against transformers on the same chats.

Families and the template each mirrors (the `chat_template` of the model's
tokenizer_config.json):

- ``qwen2``: Qwen2.5 / Qwen2.5-Coder Instruct (ChatML). A chat without a leading
  system message gets Qwen2.5's default one. (Qwen2, not 2.5, had another default.)
- ``llama3``: Llama 3.1 Instruct; its system turn always carries the
  "Cutting Knowledge Date" / "Today Date" preamble, and every content is stripped.
  Llama 3.2's template is the same except that transformers fills today's date when
  none is given: pass ``date_string`` to get reproducible text for either.
- ``gemma2``: Gemma 2 IT. No system role: its template raises on a leading system
  message; here a system message anywhere raises (the template would print a
  ``system`` turn the model never saw). Roles must alternate, starting with user.
- ``deepseek_v2``: DeepSeek-V2(-Lite)-Chat ("User: ... Assistant: ..."). Its
  generation prompt is ``Assistant:`` with no space, while a rendered assistant turn
  is ``Assistant: `` + content: that mismatch is the template's own.

Only the roles system, user and assistant are accepted (no tools), and a chat must
hold at least one message. Errors are `ValueError` saying what to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

Message = Mapping[str, object]
Segment = tuple[str, bool]

ROLES = ("system", "user", "assistant")
QWEN2_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# The Llama 3.1 template's own default for `date_string`.
LLAMA3_DEFAULT_DATE = "26 Jul 2024"
DEEPSEEK_BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"  # <｜begin▁of▁sentence｜>
DEEPSEEK_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"


def render(messages: Sequence[Message], family: str, add_generation_prompt: bool = False,
           *, date_string: str = LLAMA3_DEFAULT_DATE) -> str:
    """The chat as `family`'s template renders it. With `add_generation_prompt` the text
    ends with the header that opens an assistant turn. `date_string` only matters to
    llama3 (the template variable of the same name)."""
    return "".join(text for text, _ in _build(messages, family, add_generation_prompt, date_string))


def segments(messages: Sequence[Message], family: str,
             *, date_string: str = LLAMA3_DEFAULT_DATE) -> list[Segment]:
    """`render(messages, family)` cut into consecutive pieces, each with whether it is
    assistant-generated text the loss should fall on: an assistant's content plus its
    end-of-turn marker, never its role header. Neighbouring pieces differ in the flag."""
    return _build(messages, family, False, date_string)


def _build(messages: Sequence[Message], family: str, add_generation_prompt: bool,
           date_string: str) -> list[Segment]:
    builder = _FAMILIES.get(family)
    if builder is None:
        raise ValueError(f"unknown chat family {family!r}; expected one of {', '.join(_FAMILIES)}")
    chat = _checked(messages)
    return merge_segments(builder(chat, add_generation_prompt, date_string))


def merge_segments(pieces: Sequence[Segment]) -> list[Segment]:
    """The pieces without empty ones, neighbours with the same flag joined."""
    merged: list[Segment] = []
    for text, loss in pieces:
        if not text:
            continue
        if merged and merged[-1][1] == loss:
            merged[-1] = (merged[-1][0] + text, loss)
        else:
            merged.append((text, loss))
    return merged


def checked_messages(messages: Sequence[Message], roles: Sequence[str] | None = ROLES) -> list[dict]:
    """Copies of the messages, or a ValueError naming the offending one; `roles`: the
    roles accepted (None: any, as a folder's own template may take others)."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ValueError("messages must be a list of {'role', 'content'} dicts, "
                         f"got {type(messages).__name__}")
    if not messages:
        # Every template but DeepSeek's reads messages[0]; an empty chat is a data error.
        raise ValueError("messages is empty: a chat needs at least one message")
    chat = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i}: must be a dict with 'role' and 'content', got {message!r}")
        if roles is not None and message["role"] not in roles:
            raise ValueError(f"message {i}: unknown role {message['role']!r}; expected one of {', '.join(roles)}")
        if not isinstance(message["content"], str):
            raise ValueError(f"message {i}: content must be a str, got {type(message['content']).__name__}")
        chat.append(dict(message))
    return chat


def _checked(messages: Sequence[Message]) -> list[tuple[str, str]]:
    """(role, content) pairs, or a ValueError naming the offending message."""
    return [(message["role"], message["content"]) for message in checked_messages(messages)]


def _qwen2(chat: list[tuple[str, str]], gen: bool, _date: str) -> list[Segment]:
    # The template prints the first message's system turn itself, then skips it in its
    # loop; every non-assistant turn has the same shape, so one loop covers both.
    out: list[Segment] = []
    if chat[0][0] != "system":
        out.append((f"<|im_start|>system\n{QWEN2_DEFAULT_SYSTEM}<|im_end|>\n", False))
    for role, content in chat:
        if role == "assistant":
            out += [("<|im_start|>assistant\n", False), (content + "<|im_end|>", True), ("\n", False)]
        else:
            out.append((f"<|im_start|>{role}\n{content}<|im_end|>\n", False))
    if gen:
        out.append(("<|im_start|>assistant\n", False))
    return out


def _llama3(chat: list[tuple[str, str]], gen: bool, date: str) -> list[Segment]:
    # Jinja's `trim` is str.strip(): the template strips every content, the system one too.
    system = ""
    if chat[0][0] == "system":
        system, chat = chat[0][1].strip(), chat[1:]
    out: list[Segment] = [(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        f"Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n{system}<|eot_id|>", False)]
    for role, content in chat:
        out.append((f"<|start_header_id|>{role}<|end_header_id|>\n\n", False))
        out.append((content.strip() + "<|eot_id|>", role == "assistant"))
    if gen:
        out.append(("<|start_header_id|>assistant<|end_header_id|>\n\n", False))
    return out


def _gemma2(chat: list[tuple[str, str]], gen: bool, _date: str) -> list[Segment]:
    out: list[Segment] = [("<bos>", False)]
    for i, (role, content) in enumerate(chat):
        if role == "system":
            raise ValueError(f"message {i}: gemma2 has no system role; fold it into the first user message")
        if (role == "user") != (i % 2 == 0):
            raise ValueError(f"message {i}: gemma2 roles must alternate user/assistant/user/..., "
                             f"starting with user; got {role!r}")
        if role == "assistant":
            out += [("<start_of_turn>model\n", False), (content.strip() + "<end_of_turn>", True),
                    ("\n", False)]
        else:
            out.append((f"<start_of_turn>user\n{content.strip()}<end_of_turn>\n", False))
    if gen:
        out.append(("<start_of_turn>model\n", False))
    return out


def _deepseek_v2(chat: list[tuple[str, str]], gen: bool, _date: str) -> list[Segment]:
    out: list[Segment] = [(DEEPSEEK_BOS, False)]
    for role, content in chat:
        if role == "assistant":
            out += [("Assistant: ", False), (content + DEEPSEEK_EOS, True)]
        elif role == "user":
            out.append((f"User: {content}\n\n", False))
        else:
            out.append((f"{content}\n\n", False))
    if gen:
        out.append(("Assistant:", False))
    return out


_FAMILIES: dict[str, Callable[[list[tuple[str, str]], bool, str], list[Segment]]] = {
    "qwen2": _qwen2,
    "llama3": _llama3,
    "gemma2": _gemma2,
    "deepseek_v2": _deepseek_v2,
}
