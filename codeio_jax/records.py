"""The records that flow between stages, and JSONL in and out.

A unified record is the CodeI/O authors' parsed format (`problem_description`,
`io_requirements`, `refcode`, `funcname`, `ios`, plus their `category` and
`meta`) with two additions: the `input_generator` source and a stable `id`. A
file of the authors' records reads unchanged; their records have no generator
and get an id from a hash of their content.

Reading never stops at a bad line: each line comes back as a record or as a
`LineError` that says which line and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

OUTPUT_PREDICTION = "output_prediction"
INPUT_PREDICTION = "input_prediction"
TASKS = (OUTPUT_PREDICTION, INPUT_PREDICTION)


class RecordError(ValueError):
    """A record that cannot be used, with what to fix."""


@dataclasses.dataclass(frozen=True)
class LineError:
    """A line of a JSONL file that is not a usable record."""

    line: int
    reason: str
    id: str | None = None


@dataclasses.dataclass(frozen=True)
class IOPair:
    input: dict
    output: Any

    def to_dict(self) -> dict:
        return {"input": self.input, "output": self.output}


@dataclasses.dataclass(frozen=True)
class UnifiedRecord:
    id: str
    problem_description: str
    io_requirements: str
    refcode: str
    funcname: str = "main_solution"
    input_generator: str | None = None
    ios: tuple[IOPair, ...] = ()
    category: str = ""
    meta: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, row: Any, where: str = "record") -> "UnifiedRecord":
        if not isinstance(row, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for name in ("problem_description", "io_requirements", "refcode"):
            if name not in row:
                raise RecordError(f"{where}: field `{name}` is missing")
            if not isinstance(row[name], str):
                raise RecordError(f"{where}: field `{name}` must be a string")
        funcname = row.get("funcname", "main_solution")
        if not isinstance(funcname, str) or not funcname.isidentifier():
            raise RecordError(f"{where}: field `funcname` must be a Python identifier, got {funcname!r}")
        generator = row.get("input_generator")
        if generator is not None and not isinstance(generator, str):
            raise RecordError(f"{where}: field `input_generator` must be a string of Python code")
        ios = row.get("ios", [])
        if not isinstance(ios, list):
            raise RecordError(f"{where}: field `ios` must be a list of {{input, output}} objects")
        pairs = []
        for i, pair in enumerate(ios):
            if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
                raise RecordError(f"{where}: `ios[{i}]` must be an object with `input` and `output`")
            if not isinstance(pair["input"], dict):
                raise RecordError(f"{where}: `ios[{i}].input` must be an object of keyword arguments")
            pairs.append(IOPair(pair["input"], pair["output"]))
        record_id = row.get("id")
        if record_id is None:
            record_id = stable_id(row)
        elif not isinstance(record_id, str) or not record_id:
            raise RecordError(f"{where}: field `id` must be a non-empty string")
        meta = row.get("meta") or {}
        return cls(
            id=record_id,
            problem_description=row["problem_description"],
            io_requirements=row["io_requirements"],
            refcode=row["refcode"],
            funcname=funcname,
            input_generator=generator,
            ios=tuple(pairs),
            category=str(row.get("category", "")),
            meta=meta if isinstance(meta, dict) else {"value": meta},
        )

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "category": self.category,
            "problem_description": self.problem_description,
            "io_requirements": self.io_requirements,
            "refcode": self.refcode,
            "funcname": self.funcname,
            "input_generator": self.input_generator,
            "ios": [pair.to_dict() for pair in self.ios],
            "meta": self.meta,
        }


def stable_id(row: dict) -> str:
    """An id from what defines a record (its code and its question), so the same
    record gets the same id wherever it sits in whichever file."""
    digest = hashlib.sha256()
    for name in ("refcode", "problem_description", "io_requirements"):
        digest.update(str(row.get(name, "")).encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return "rec_" + digest.hexdigest()[:16]


def read_jsonl(path: str | Path, max_line_bytes: int = 4 << 20) -> Iterator[tuple[int, Any] | LineError]:
    """(line number, parsed object) per line, or a LineError; blank lines are skipped.

    Lines are read as bytes, so one line of bad UTF-8 is reported and the rest of
    the file still reads."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if len(raw) > max_line_bytes:
                yield LineError(number, f"line {number}: {len(raw)} bytes, over the "
                                        f"{max_line_bytes}-byte limit for one record")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield LineError(number, f"line {number}: not valid UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            try:
                yield number, json.loads(text)
            except ValueError as exc:
                yield LineError(number, f"line {number}: not valid JSON ({exc})")


def read_unified(path: str | Path) -> Iterator[UnifiedRecord | LineError]:
    for _, item in read_unified_numbered(path):
        yield item


def read_unified_numbered(path: str | Path) -> Iterator[tuple[int, UnifiedRecord | LineError]]:
    """(line number, record or LineError) for every non-blank line."""
    for item in read_jsonl(path):
        if isinstance(item, LineError):
            yield item.line, item
            continue
        number, row = item
        try:
            yield number, UnifiedRecord.from_dict(row, where=f"line {number}")
        except RecordError as exc:
            yield number, LineError(number, str(exc), row.get("id") if isinstance(row, dict) else None)


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prediction prompt (data/prompts.py makes them, teachers answer them):
    which record and pair it asks about, and the chat as role/content messages."""

    record_id: str
    task: str
    pair_index: int
    messages: tuple[dict[str, str], ...]
    input: dict
    output: Any

    def to_dict(self) -> dict:
        return {"record_id": self.record_id, "task": self.task, "pair_index": self.pair_index,
                "messages": list(self.messages), "input": self.input, "output": self.output}


def count_rows(path: str | Path) -> int:
    """Non-blank lines of a JSONL file: the rows read_jsonl gives (each a row or a LineError)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


@contextlib.contextmanager
def open_atomic(path: str | Path) -> Iterator[IO[str]]:
    """A text file to write that appears at `path` whole or not at all: written
    under a temporary name beside it (unique to this process and thread, so
    concurrent writers never share one), renamed over `path` when the block ends
    without an exception, removed when it raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows atomically (a reader never sees half a file); returns the count."""
    count = 0
    with open_atomic(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            count += 1
    return count
