"""When a predicted value counts as the recorded one.

CodeI/O's rule: equal as JSON, or numbers within a relative 1e-3 that share their
integer part, applied recursively through dicts and lists. NaN and infinities are
never close to anything, themselves included. Booleans are not numbers here
(JSON tells `true` from `1`), and tuples compare as the lists JSON makes of them.
"""

from __future__ import annotations

import json
import math
from typing import Any

REL_TOL = 1e-3


def values_match(predicted: Any, expected: Any, rel_tol: float = REL_TOL) -> bool:
    return first_mismatch(predicted, expected, rel_tol) is None


def first_mismatch(predicted: Any, expected: Any, rel_tol: float = REL_TOL,
                   path: str = "") -> str | None:
    """None when the values match; otherwise where and how they first differ,
    worded for a model to read (the revision turn quotes it)."""
    where = f" at {path}" if path else ""
    if isinstance(expected, bool) or isinstance(predicted, bool):
        if type(predicted) is type(expected) and predicted == expected:
            return None
        return f"{where.strip() or 'the value'}: predicted {show(predicted)}, expected {show(expected)}"
    if _is_number(expected) and _is_number(predicted):
        if _numbers_close(predicted, expected, rel_tol):
            return None
        return f"{where.strip() or 'the value'}: predicted {show(predicted)}, expected {show(expected)}"
    if isinstance(expected, (list, tuple)) and isinstance(predicted, (list, tuple)):
        if len(predicted) != len(expected):
            return (f"{where.strip() or 'the list'}: predicted {len(predicted)} items, "
                    f"expected {len(expected)}")
        for i, (p, e) in enumerate(zip(predicted, expected)):
            found = first_mismatch(p, e, rel_tol, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(expected, dict) and isinstance(predicted, dict):
        missing = [k for k in expected if k not in predicted]
        extra = [k for k in predicted if k not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing keys {show(missing)}")
            if extra:
                parts.append(f"unexpected keys {show(extra)}")
            return f"{where.strip() or 'the object'}: " + ", ".join(parts)
        for key in expected:
            found = first_mismatch(predicted[key], expected[key], rel_tol, f"{path}[{show(key)}]")
            if found:
                return found
        return None
    if type(predicted) is type(expected) and predicted == expected:
        return None
    return f"{where.strip() or 'the value'}: predicted {show(predicted)}, expected {show(expected)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers_close(a: float, b: float, rel_tol: float) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    if math.trunc(a) != math.trunc(b):
        return False
    return a == b or abs(a - b) <= rel_tol * abs(b)


def show(value: Any, limit: int = 300) -> str:
    """A value as JSON for a model to read, shortened past `limit` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
