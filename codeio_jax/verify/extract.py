"""Find the answer in a model's free-form reply.

A reply usually reasons first and answers last, so the answer is the last
candidate that holds the requested key. Candidates, in the order they appear:
```json fences (or bare ``` fences), \\boxed{...}, and every top-level {...}
object in the prose. Each is read as JSON first, then as a Python literal
(True/None, single quotes, tuples), and normalised to what JSON would make of it.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from typing import Any

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_BOXED = "\\boxed{"


@dataclasses.dataclass(frozen=True)
class Extraction:
    """The answer and where it was found (`fence`, `boxed` or `object`)."""

    value: Any
    method: str


class _Unparseable(ValueError):
    pass


def extract_answer(reply: str, key: str) -> Extraction | None:
    """The value under `key` ("output" or "input") of the last answer in `reply`,
    or None when the reply holds no readable answer."""
    candidates = []
    for match in _FENCE_RE.finditer(reply):
        if match.group(1).lower() in ("", "json", "python", "py", "json5"):
            candidates.append((match.end(), "fence", match.group(2)))
    start = reply.find(_BOXED)
    while start != -1:
        end = _matching_brace(reply, start + len(_BOXED) - 1)
        if end is None:
            break
        candidates.append((end + 1, "boxed", reply[start + len(_BOXED):end]))
        start = reply.find(_BOXED, end)
    for begin, end in _top_level_objects(reply):
        candidates.append((end, "object", reply[begin:end]))

    for _, method, text in sorted(candidates, key=lambda c: c[0], reverse=True):
        try:
            value = parse_value(text)
        except _Unparseable:
            continue
        if isinstance(value, dict) and key in value:
            return Extraction(value[key], method)
        if method == "boxed" and not isinstance(value, dict):
            # \boxed{42}: the bare value is the answer.
            return Extraction(value, method)
    return None


def parse_value(text: str) -> Any:
    """JSON, else a Python literal normalised to JSON types."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise _Unparseable(text) from None
    try:
        return json.loads(json.dumps(value, default=_jsonable))
    except (TypeError, ValueError):
        raise _Unparseable(text) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _matching_brace(text: str, open_at: int) -> int | None:
    """Index of the brace closing the one at `open_at`, skipping quoted strings."""
    depth = 0
    quote = None
    i = open_at
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _top_level_objects(text: str) -> list[tuple[int, int]]:
    """Spans of the outermost {...} groups. Quotes are only tracked inside braces,
    so an apostrophe in the prose does not open a string."""
    spans = []
    depth = 0
    quote = None
    begin = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if depth and quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif depth and ch in "\"'":
            quote = ch
        elif ch == "{":
            if depth == 0:
                begin = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append((begin, i + 1))
        i += 1
    return spans
