"""The `transform` stage: a raw code file in, a unified record out.

A teacher (a real model: the trace teacher has no code to trace yet) rewrites
the code into the four sections of the transform prompt, and the reply is
parsed into a unified record without pairs; the `ios` stage then runs it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from codeio_jax.data.prompts import transform_messages
from codeio_jax.records import foreign_format

CODE_FIELDS = ("content", "code")  # the raw corpus's field, then a plainer name


def raw_code(row: Any) -> tuple[str, str]:
    """(id, code) of a raw row; raises ValueError saying what is missing. The id
    is the row's `id`, else its `blob_id`, else a hash of the code."""
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    foreign = foreign_format(row, "raw")
    if foreign:
        raise ValueError(foreign)
    code = next((row[name] for name in CODE_FIELDS if isinstance(row.get(name), str)), None)
    if code is None or not code.strip():
        raise ValueError("no code: field `content` (or `code`) is missing or empty")
    row_id = row.get("id") or row.get("blob_id")
    if row_id is not None and (not isinstance(row_id, str) or not row_id):
        raise ValueError(f"field `id` must be a non-empty string, got {row_id!r}")
    return row_id or "raw_" + hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()[:16], code


def request(code: str) -> list[dict]:
    return transform_messages(code)


def unified_row(row_id: str, fields: dict, source: dict) -> dict:
    """A unified record from the parsed reply; where the code came from goes to `meta`."""
    meta = {name: source[name] for name in ("repo_name", "path", "blob_id") if name in source}
    return {"id": row_id, "category": "", **fields, "ios": [], "meta": meta}
