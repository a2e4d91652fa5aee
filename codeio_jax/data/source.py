"""A pipeline's source: the JSONL files a path or a glob names, and which of the
three row formats they hold.

Both engines start here, on the launching machine: `match` turns the setting
into files (local paths by glob; `gs://` and Beam's other filesystems by Beam's
FileSystems), and `kind_of` reads the first row of each file, so a pattern that
matches nothing, a file that is not JSONL, or files of different formats fail
before any work starts instead of as a million error rows.

The formats, each the input of one first stage:
    raw       code to transform (`content` or `code`)        -> transform
    unified   records for the ios stage (`refcode`)          -> ios
    released  rows of CodeIO-PyEdu-Reasoning (`prompt`, `turn_1`) -> import

A row of another format inside a source (a mix within one file) becomes that
row's error row in the first stage (records.foreign_format), never a silent skip.

A worker reading part of a file (records.read_lines over one of `byte_ranges`)
owns the lines that begin in its byte range, so the ranges of a file together
read each line exactly once, and each line is named by (file, byte offset),
which needs no count of the lines before it.
"""

from __future__ import annotations

import glob
import os
from typing import Any, BinaryIO, Callable

from codeio_jax.records import MAX_LINE_BYTES, RecordError, parse_line, row_kind

_GLOB_CHARS = frozenset("*?[")


class SourceError(ValueError):
    """A source that cannot be read as configured; says what to change."""


def is_remote(path: str) -> bool:
    return "://" in path


def match(pattern: str) -> list[str]:
    """The files `pattern` names, sorted: a path or a glob (`**` for any depth),
    local or on any filesystem Beam knows (`gs://bucket/corpus/*.jsonl`)."""
    pattern = str(pattern)
    if is_remote(pattern):
        try:
            from apache_beam.io.filesystems import FileSystems
        except ImportError:
            raise SourceError(f"{pattern}: a remote source needs Apache Beam's filesystems: "
                              "pip install 'codeio-jax[beam]'") from None
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception as exc:  # a filesystem's own error: unknown scheme, no credentials, ...
            raise SourceError(f"cannot list {pattern}: {exc}") from None
        files = [meta.path for meta in found if not meta.path.endswith("/")]
    elif os.path.isdir(pattern):
        raise SourceError(f"the source {pattern} is a folder: name its files, e.g. "
                          f"{os.path.join(pattern, '*.jsonl')}")
    elif _GLOB_CHARS & set(pattern):
        files = [path for path in glob.glob(pattern, recursive=True) if os.path.isfile(path)]
    else:
        files = [pattern] if os.path.isfile(pattern) else []
    if not files:
        raise SourceError(f"the source {pattern} does not exist" if not _GLOB_CHARS & set(pattern)
                          else f"the source pattern {pattern} matches no file")
    return sorted(files)


def _local_open(path: str) -> BinaryIO:
    return open(path, "rb")  # noqa: SIM115 (the caller closes it)


def opener_for(path: str) -> Callable[[str], BinaryIO]:
    if not is_remote(path):
        return _local_open
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open


def first_value(path: str, opener: Callable[[str], BinaryIO] | None = None,
                max_line_bytes: int = MAX_LINE_BYTES) -> tuple[bool, Any]:
    """(True, the first non-blank line's value) or (False, None) for a file of
    blank lines; raises SourceError when that line is not JSON."""
    with (opener or opener_for(path))(path) as f:
        for raw in iter(lambda: f.readline(max_line_bytes + 1), b""):
            if not raw.strip():
                continue
            try:
                return True, parse_line(raw, max_line_bytes)
            except RecordError as exc:
                raise SourceError(f"{path} is not JSONL: its first line is {exc}") from None
    return False, None


def kind_of(files: list[str], opener: Callable[[str], BinaryIO] | None = None) -> str:
    """The one format the files hold, judged by each file's first row."""
    kinds: dict[str, list[str]] = {}
    for path in files:
        found, value = first_value(path, opener)
        if not found:
            continue  # no rows, nothing to judge
        kind = row_kind(value)
        if kind is None:
            shown = sorted(value)[:6] if isinstance(value, dict) else type(value).__name__
            raise SourceError(f"{path}: its first row is none of the formats a pipeline starts from "
                              f"(raw code with `content`, a unified record with `refcode`, a released "
                              f"row with `prompt` and `turn_1`); it has {shown}")
        kinds.setdefault(kind, []).append(path)
    if not kinds:
        raise SourceError(f"the source's {len(files)} file(s) hold no rows")
    if len(kinds) > 1:
        described = "; ".join(f"{kind} rows in {len(paths)} file(s), e.g. {paths[0]}"
                              for kind, paths in sorted(kinds.items()))
        raise SourceError(f"the source mixes row formats ({described}): give each format its own run")
    return next(iter(kinds))


def byte_ranges(size: int, desired: int) -> list[tuple[int, int]]:
    """[start, end) ranges covering a file of `size` bytes, about `desired` each."""
    if size <= 0:
        return []
    count = max(1, -(-size // max(desired, 1)))
    bounds = [size * i // count for i in range(count + 1)]
    return [(start, end) for start, end in zip(bounds, bounds[1:]) if end > start]
