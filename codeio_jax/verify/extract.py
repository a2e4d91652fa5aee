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
from typing import Any, Iterator

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
        # The group that opens with \boxed's own brace.
        group = next(_brace_groups(reply, start + len(_BOXED) - 1), None)
        if group is None:
            break
        end = group[1]
        candidates.append((end, "boxed", reply[start + len(_BOXED):end - 1]))
        start = reply.find(_BOXED, end)
    for begin, end in _brace_groups(reply):
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
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
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


def _brace_groups(text: str, start: int = 0) -> Iterator[tuple[int, int]]:
    """Spans of the outermost {...} groups from `start` on, in order. Quotes are
    only tracked inside braces, so an apostrophe in the prose does not open a
    string; a group never closed yields nothing."""
    depth = 0
    quote = None
    begin = start
    i = start
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
                yield begin, i + 1
        i += 1
