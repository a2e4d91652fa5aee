"""The records that flow between stages, and JSONL in and out.

A unified record is the CodeI/O authors' parsed format (`problem_description`,
`io_requirements`, `refcode`, `funcname`, `ios`, plus their `category` and
`meta`) with two additions: the `input_generator` source and a stable `id`. A
file of the authors' records reads unchanged; their records have no generator
and get an id from a hash of their content.

Reading never stops at a bad line: each line comes back as a record or as a
`LineError` that says where the line is (its number, its file and byte offset)
and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import IO, Any, BinaryIO, Iterable, Iterator, Sequence

OUTPUT_PREDICTION = "output_prediction"
INPUT_PREDICTION = "input_prediction"
TASKS = (OUTPUT_PREDICTION, INPUT_PREDICTION)


class RecordError(ValueError):
    """A record that cannot be used, with what to fix."""


MAX_LINE_BYTES = 4 << 20  # the most one JSONL line (one record) may take


@dataclasses.dataclass(frozen=True)
class LineError:
    """A line of a JSONL file that is not a usable record. `reason` says what is
    wrong and not where: `line` is the line's number where the reader counted
    lines (a Beam worker reading a byte range cannot), `file` and `offset` (of
    its first byte) where it knows them."""

    line: int | None
    reason: str
    id: str | None = None
    file: str | None = None
    offset: int | None = None

    def location(self) -> dict:
        """The fields an error row names the line by in every engine."""
        return {"file": self.file, "offset": self.offset}


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
    def from_dict(cls, row: Any) -> "UnifiedRecord":
        """The record a row holds; raises RecordError naming the field to fix."""
        where = "record"
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


# The row formats a source may hold, and the stage each goes to first.
KINDS = ("raw", "unified", "released")
FIRST_STAGE = {"raw": "transform", "unified": "ios", "released": "import"}


def row_kind(row: Any) -> str | None:
    """Which format a parsed row is in; None: none of them."""
    if not isinstance(row, dict):
        return None
    if "prompt" in row and "turn_1" in row:  # our own examples too, which also carry `refcode`
        return "released"
    if "refcode" in row:
        return "unified"
    if "content" in row or "code" in row:
        return "raw"
    return None


def foreign_format(row: Any, kind: str) -> str | None:
    """Why a row does not belong in a source of `kind` rows, if it is of another
    known format (a row of no format is the first stage's to judge)."""
    found = row_kind(row)
    if found is None or found == kind:
        return None
    return (f"a {found} row ({FIRST_STAGE[found]} input) in a source of {kind} rows: "
            "give each format its own run")


def stable_id(row: dict) -> str:
    """An id from what defines a record (its code and its question), so the same
    record gets the same id wherever it sits in whichever file."""
    digest = hashlib.sha256()
    for name in ("refcode", "problem_description", "io_requirements"):
        digest.update(str(row.get(name, "")).encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return "rec_" + digest.hexdigest()[:16]


def parse_line(raw: bytes, max_line_bytes: int = MAX_LINE_BYTES) -> Any:
    """The JSON value of one line of bytes; raises RecordError saying what is
    wrong with it (the caller knows where it is)."""
    if len(raw) > max_line_bytes:
        raise RecordError(f"over the {max_line_bytes}-byte limit for one record")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RecordError(f"not valid JSON ({exc})") from None


def read_lines(f: BinaryIO, start: int = 0, end: float = float("inf"), max_line_bytes: int = MAX_LINE_BYTES,
               blank: bool = False) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of the non-blank lines (all lines with `blank`) that
    begin in [start, end) of the open binary file `f`: ranges that cover a file
    read each line once. A line over `max_line_bytes` comes back cut to one
    byte over the limit (enough to be judged too long, never a whole huge line
    in memory)."""
    if start > 0:
        f.seek(start - 1)
        if f.read(1) != b"\n":  # mid-line: that line belongs to the range before
            _skip_line(f)
    position = f.tell()
    while position < end:
        raw = f.readline(max_line_bytes + 1)
        if not raw:
            return
        at = position
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            _skip_line(f)
        position = f.tell()
        if blank or raw.strip():
            yield at, raw


def _skip_line(f: BinaryIO) -> None:
    while (chunk := f.readline(1 << 20)) and not chunk.endswith(b"\n"):
        pass


Paths = str | Path | Sequence[str | Path]


def read_located(paths: Paths, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str, int, Any]]:
    """(line number, file, byte offset, parsed value or LineError) per non-blank
    line. Several files read as one, in the order given, numbered on (blank
    lines count: a number is the line an editor shows)."""
    number = 0
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        with open(path, "rb") as f:
            for at, raw in read_lines(f, max_line_bytes=max_line_bytes, blank=True):
                number += 1
                if not raw.strip():
                    continue
                try:
                    yield number, str(path), at, parse_line(raw, max_line_bytes)
                except RecordError as exc:
                    yield number, str(path), at, LineError(number, str(exc), file=str(path), offset=at)


def read_jsonl(paths: Paths, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, Any] | LineError]:
    """(line number, parsed value) per non-blank line, or a LineError.

    Lines are read as bytes, so one line of bad UTF-8 is reported and the rest of
    the file still reads."""
    for number, _, _, value in read_located(paths, max_line_bytes):
        yield value if isinstance(value, LineError) else (number, value)


def unified_or_error(value: Any, number: int | None, file: str | None, offset: int | None,
                     ) -> UnifiedRecord | LineError:
    """A parsed line as a unified record, or the LineError saying why it is not one."""
    if isinstance(value, LineError):
        return value
    try:
        foreign = foreign_format(value, "unified")
        if foreign:
            raise RecordError(foreign)
        return UnifiedRecord.from_dict(value)
    except RecordError as exc:
        row_id = value.get("id") if isinstance(value, dict) else None
        return LineError(number, str(exc), row_id if isinstance(row_id, str) else None, file, offset)


def read_unified(paths: Paths) -> Iterator[UnifiedRecord | LineError]:
    for _, item in read_unified_numbered(paths):
        yield item


def read_unified_numbered(paths: Paths) -> Iterator[tuple[int, UnifiedRecord | LineError]]:
    """(line number, record or LineError) for every non-blank line."""
    for number, file, offset, value in read_located(paths):
        yield number, unified_or_error(value, number, file, offset)


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


def count_rows(paths: Paths) -> int:
    """Non-blank lines of JSONL files: the rows read_jsonl gives (each a row or a LineError)."""
    total = 0
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        with open(path, "rb") as f:
            total += sum(1 for line in f if line.strip())
    return total


_TEMPORARY_DIGITS = 12  # of a uuid4's hex: what makes a temporary's name its writer's own


def temporary_name(path: str | Path) -> str:
    """Where a file is written before it is whole: beside `path` (so renaming it
    over `path` is atomic where the filesystem has such a rename), dot-prefixed
    (a `{name}*` pattern never picks it up) and unique to its writer (process,
    thread or Beam worker alike), so concurrent writers never share one. Works
    for remote paths (`gs://...`) too: they also take `/`."""
    folder, slash, name = str(path).rpartition("/")
    return f"{folder}{slash}.{name}.{uuid.uuid4().hex[:_TEMPORARY_DIGITS]}.partial"


def remove_temporaries(path: str | Path) -> None:
    """Delete what killed writers of `path` left behind (its `temporary_name`s).
    Only for a file with one writer at a time, as a stage's outputs are: a live
    writer's temporary would go too."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    # Exactly temporary_name's form: `.{name}.*.partial` would also take the
    # temporaries of `{name}.done` and the like.
    own = re.compile(re.escape(f".{path.name}.") + f"[0-9a-f]{{{_TEMPORARY_DIGITS}}}" + re.escape(".partial"))
    for leftover in path.parent.iterdir():
        if own.fullmatch(leftover.name):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def open_atomic(path: str | Path, only_writer: bool = False) -> Iterator[IO[str]]:
    """A text file to write that appears at `path` whole or not at all: written
    under its `temporary_name`, renamed over `path` when the block ends without
    an exception, removed when it raises. only_writer: nothing else writes
    `path` meanwhile (a stage's outputs, a run's report), so the temporaries of
    writers killed before (kill -9 leaves them) are removed first."""
    if only_writer:
        remove_temporaries(path)
    tmp = Path(temporary_name(path))
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
