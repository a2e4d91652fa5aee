"""Sharded output that every engine writes byte for byte the same, in bounded memory.

A shard set is a fixed number of files per format. A row's key (its id and a
digest of its content) picks its shard (a hash of the id) and its place inside
it (rows sorted by key), so neither depends on the order rows arrive in, on the
runner, or on how many workers there were.

Writing is the two steps of an external sort:
  spill: rows gather in a buffer of at most `run_bytes`; when it is full, each
    shard's share is sorted and written as one *run* file in a scratch folder;
  merge: a shard's runs are merged (heapq, a bounded number at a time) into its
    final files, each written under a temporary name, then renamed into place.
A Beam worker spills what its bundles give it and passes on only the runs'
names, one worker per shard merges them; the local driver does both in one
process. Memory is one buffer plus one row per open run, whatever the size of
the corpus, and a killed writer leaves temporaries, never a partial shard.

Run files hold one row a line: the key's JSON, a tab, the row's JSON (neither
holds a raw tab or newline).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import json
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Protocol

from codeio_jax.data import tfrecords
from codeio_jax.records import temporary_name

EXAMPLES = "codeio_examples"  # the prefix the SeqIO tasks read (tasks/codeio.py)
ERRORS = "codeio_errors"
FORMATS = ("tfrecord", "jsonl")
RUN_BYTES = 8 << 20  # a worker holds one such buffer per set it writes
FAN_IN = 64  # runs merged at once: open files, and one buffered row each


class Files(Protocol):
    """The file operations a shard writer needs: local, or Beam's FileSystems."""

    def open(self, path: str) -> BinaryIO: ...
    def create(self, path: str) -> BinaryIO: ...
    def rename(self, source: str, dest: str) -> None: ...
    def delete(self, paths: list[str]) -> None: ...
    def listing(self, folder: str, prefix: str) -> list[str]: ...


class LocalFiles:
    def open(self, path: str) -> BinaryIO:
        return open(path, "rb")  # noqa: SIM115 (the caller closes it)

    def create(self, path: str) -> BinaryIO:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")  # noqa: SIM115

    def rename(self, source: str, dest: str) -> None:
        os.replace(source, dest)

    def delete(self, paths: list[str]) -> None:
        for path in paths:
            Path(path).unlink(missing_ok=True)

    def listing(self, folder: str, prefix: str) -> list[str]:
        if not os.path.isdir(folder):
            return []
        return sorted(join(folder, name) for name in os.listdir(folder) if name.startswith(prefix))


def join(folder: str, name: str) -> str:
    """A path in a folder, local or remote (`gs://...`): both take `/`."""
    return f"{str(folder).rstrip('/')}/{name}"


def content_digest(row: dict) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False).encode(
        "utf-8", "surrogatepass")).hexdigest()[:32]


def error_row(row: dict) -> dict:
    """An error row as the shards hold it: without `line`, which counts a stage's
    own input lines, differs between engines and names nothing outside the run
    (`id`, or `file` and `offset` for a line that held no record, do)."""
    return {name: value for name, value in row.items() if name != "line"}


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """`count` files per format in `folder`: `{name}.{format}-00000-of-00004`."""

    name: str
    count: int
    formats: tuple[str, ...]
    folder: str

    def __post_init__(self):
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"a shard set needs a positive int count, got {self.count!r}")
        unknown = set(self.formats) - set(FORMATS)
        if unknown or not self.formats:
            raise ValueError(f"shard formats must be among {FORMATS}, got {self.formats}")

    def path(self, fmt: str, shard: int) -> str:
        return join(self.folder, f"{self.name}.{fmt}-{shard:05d}-of-{self.count:05d}")

    def counts_path(self) -> str:
        return join(self.folder, f"{self.name}.counts.json")

    def paths(self) -> list[str]:
        return [self.path(fmt, shard) for fmt in self.formats for shard in range(self.count)]

    def keyed(self, row: dict) -> tuple[int, str, bytes]:
        """(shard, sort key, the row's JSON line) of a row of this set."""
        if self.name == ERRORS:
            row = error_row(row)
            row_id = row.get("id")
            anchor = row_id if isinstance(row_id, str) and row_id else None
        else:
            anchor = row.get("id")
            if not isinstance(anchor, str) or not anchor:
                raise tfrecords.SchemaError(f"an example without a string `id` (which picks its shard): "
                                            f"{json.dumps(row, ensure_ascii=False)[:200]}")
        digest = content_digest(row)
        key = json.dumps([anchor or "", digest])
        text = json.dumps(row, ensure_ascii=False)
        return tfrecords.shard_of(anchor or digest, self.count), key, text.encode("utf-8", "surrogatepass")


class Spiller:
    """Buffers (shard, key, text) entries and writes each shard's share as a
    run sorted by key when the buffer is full (`add`) or on `flush`; both
    return the runs written, as (shard, path). Any data a worker must hand on
    without holding it (shard rows, dedup buckets, records waiting for a
    decision) goes through here."""

    def __init__(self, name: str, scratch: str, files: Files, run_bytes: int = RUN_BYTES):
        self._name, self._scratch, self._files, self._run_bytes = name, scratch, files, run_bytes
        self._buffer: dict[int, list[tuple[str, bytes]]] = {}
        self._size = 0

    def add(self, shard: int, key: str, text: bytes) -> list[tuple[int, str]]:
        self._buffer.setdefault(shard, []).append((key, text))
        self._size += len(key) + len(text) + 2
        return self.flush() if self._size >= self._run_bytes else []

    def flush(self) -> list[tuple[int, str]]:
        runs = []
        for shard, entries in sorted(self._buffer.items()):
            entries.sort()
            runs.append((shard, write_run(self._files, run_path(self._scratch, self._name, shard), entries)))
        self._buffer, self._size = {}, 0
        return runs


def run_path(scratch: str, name: str, shard: int) -> str:
    return join(scratch, f"{name}-{shard:05d}-{uuid.uuid4().hex}.run")


def write_run(files: Files, path: str, entries: Iterable[tuple[str, bytes]]) -> str:
    with files.create(path) as f:
        for key, text in entries:
            f.write(key.encode("ascii") + b"\t" + text + b"\n")
    return path


def _read_run(files: Files, path: str) -> Iterator[tuple[str, bytes]]:
    with files.open(path) as f:
        for line in f:
            key, _, text = line.rstrip(b"\n").partition(b"\t")
            yield key.decode("ascii"), text


def merged(files: Files, runs: list[str]) -> Iterator[tuple[str, bytes]]:
    """The entries of sorted runs, merged in key order."""
    with contextlib.ExitStack() as stack:
        streams = [stack.enter_context(contextlib.closing(_read_run(files, path))) for path in runs]
        yield from heapq.merge(*streams, key=lambda entry: entry[0])


def merge_shard(shard_set: ShardSet, shard: int, runs: list[str], scratch: str, files: Files,
                fan_in: int | None = None) -> tuple[dict, dict[str, str]]:
    """Merge a shard's runs into one file per format (an empty shard too), each
    under a temporary name beside its final one (`commit` renames them); the
    runs are deleted. Returns the shard's counts and {format: temporary}."""
    fan_in = fan_in or FAN_IN
    runs = sorted(runs)  # the order runs are merged in never shows: equal keys are equal rows
    while len(runs) > fan_in:  # a pass of merges to fewer, longer runs
        longer = []
        for start in range(0, len(runs), fan_in):
            group = runs[start:start + fan_in]
            longer.append(write_run(files, run_path(scratch, shard_set.name, shard), merged(files, group)))
            files.delete(group)
        runs = longer
    finals = {fmt: shard_set.path(fmt, shard) for fmt in shard_set.formats}
    temps = {fmt: temporary_name(path) for fmt, path in finals.items()}
    counts = Counts()
    outputs = {fmt: files.create(temp) for fmt, temp in temps.items()}
    try:
        for _, text in merged(files, runs):
            row = json.loads(text)
            counts.add(row, shard_set.name)
            if "jsonl" in outputs:
                outputs["jsonl"].write(text + b"\n")
            if "tfrecord" in outputs:
                outputs["tfrecord"].write(tfrecords.frame(tfrecords.encode_example(row)))
    except BaseException:
        for out in outputs.values():
            out.close()
        files.delete(list(temps.values()))
        raise
    for out in outputs.values():
        out.close()
    files.delete(runs)
    return counts.as_dict(), temps


def commit(shard_set: ShardSet, merged: Iterable[tuple[int, dict[str, str]]], files: Files) -> None:
    """Every shard's temporaries (shard, {format: temporary}) to their final
    names, once all are written (a failed shard leaves the set as it was);
    then whatever else lies there under the set's name goes."""
    finals = {temp: shard_set.path(fmt, shard) for shard, temps in merged for fmt, temp in temps.items()}
    if sorted(finals.values()) != sorted(shard_set.paths()):
        raise ValueError(f"{shard_set.name}: the merged shards do not make the whole set")
    for temp, final in sorted(finals.items(), key=lambda item: item[1]):
        files.rename(temp, final)
    files.delete(stale_files(shard_set, files))


def stale_files(shard_set: ShardSet, files: Files) -> list[str]:
    """Files in the set's folder under its name that are not its shards: shards
    of an earlier count, temporaries of a killed writer. Left there, the first
    would match a SeqIO file pattern."""
    expected = set(shard_set.paths())
    found = files.listing(shard_set.folder, f"{shard_set.name}.") + files.listing(
        shard_set.folder, f".{shard_set.name}.")
    return [path for path in found if path not in expected and not path.endswith(".counts.json")]


class Counts:
    """What the SeqIO mixtures weigh tasks by: examples by task and by turns."""

    def __init__(self, found: dict | None = None):
        self.rows, self.by_task, self.by_turns = 0, {}, {}
        if found:
            self.merge(found)

    def add(self, row: dict, name: str) -> None:
        self.rows += 1
        if name != EXAMPLES:
            return
        for table, value in ((self.by_task, row.get("task")), (self.by_turns, str(row.get("turns")))):
            table[value] = table.get(value, 0) + 1

    def merge(self, other: dict) -> "Counts":
        self.rows += other["rows"]
        for name in ("by_task", "by_turns"):
            for value, count in other[name].items():
                getattr(self, name)[value] = getattr(self, name).get(value, 0) + count
        return self

    def as_dict(self) -> dict:
        return {"rows": self.rows, "by_task": dict(sorted(self.by_task.items())),
                "by_turns": dict(sorted(self.by_turns.items()))}


def write_local(rows: Iterable[dict], shard_set: ShardSet, scratch: str,
                run_bytes: int = RUN_BYTES) -> dict:
    """The local driver's whole write: spill, merge every shard, clear stale
    files. Returns the set's counts."""
    files = LocalFiles()
    spiller = Spiller(shard_set.name, scratch, files, run_bytes)
    runs: dict[int, list[str]] = {shard: [] for shard in range(shard_set.count)}
    merged: list[tuple[int, dict[str, str]]] = []
    try:
        for row in rows:
            for shard, path in spiller.add(*shard_set.keyed(row)):
                runs[shard].append(path)
        for shard, path in spiller.flush():
            runs[shard].append(path)
        total = Counts()
        for shard in range(shard_set.count):
            counts, temps = merge_shard(shard_set, shard, runs[shard], scratch, files)
            total.merge(counts)
            merged.append((shard, temps))
        commit(shard_set, merged, files)
    finally:
        files.delete([path for paths in runs.values() for path in paths])
        files.delete([temp for _, temps in merged for temp in temps.values()])  # what commit did not take
    return total.as_dict()


def counts_json(counts: dict, errors: int) -> str:
    """The counts file's text (the SeqIO mixtures read `examples`)."""
    return json.dumps({"examples": counts["rows"], "by_task": counts["by_task"],
                       "by_turns": counts["by_turns"], "errors": errors}, sort_keys=True) + "\n"


def read_jsonl_shards(shard_set: ShardSet) -> Iterator[Any]:
    """The rows of a set's JSONL shards, shard by shard (for tests and tools)."""
    for shard in range(shard_set.count):
        with open(shard_set.path("jsonl", shard), "rb") as f:
            for line in f:
                yield json.loads(line)
