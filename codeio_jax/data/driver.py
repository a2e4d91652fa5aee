"""The local driver: a stage over JSONL, resumable after kill -9 at any moment.

Results are appended, in input order, to a journal next to the output, one
line per input item (holding every row the item gave: a stage may fan one
record out into several, as `prompts` does), each with a single write. A rerun reads the journal,
drops a line torn by the kill, and carries on after the last complete one.
Once every item is in, the output and error files are written from the journal
(each under a temporary name, then renamed: records.open_atomic), a `.done` marker records what produced
them, and the journal goes. Since the files are made from the journal alone, an
interrupted and resumed run ends byte for byte where an uninterrupted one does,
with no item twice and none missing. A journal or marker from other input or
other settings (another fingerprint) is ignored and the stage starts over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

from codeio_jax.records import count_rows, open_atomic


@dataclasses.dataclass(frozen=True)
class Result:
    """One input item's outcome: its rows for the output, or one error row."""

    ok: bool
    rows: tuple[dict, ...]

    @classmethod
    def one(cls, ok: bool, row: dict) -> "Result":
        return cls(ok, (row,))

    @classmethod
    def error(cls, row: dict) -> "Result":
        return cls(False, (row,))


@dataclasses.dataclass
class Summary:
    items: int = 0  # input items
    ok: int = 0  # rows written to the output
    errors: int = 0  # error rows
    resumed_at: int = 0  # items found already done in the journal
    already_done: bool = False


def fingerprint(source: str | Path | Sequence[str | Path], stage: str, settings: object) -> str:
    """What the outputs depend on: the input files' names and bytes, the stage
    and its settings."""
    digest = hashlib.sha256(f"{stage}\0{settings!r}\0".encode())
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    for path in sources:
        if len(sources) > 1:  # one file's fingerprint stays what it was
            digest.update(f"{path}\0".encode("utf-8", "surrogatepass"))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def run_resumable(dest: str | Path, errors_dest: str | Path, run_id: str,
                  results_from: Callable[[int], Iterator[Result]],
                  on_result: Callable[[Result], None] | None = None) -> Summary:
    """Run a stage whose `results_from(k)` yields the results of the input items
    after the first k, in order. `run_id` is the run's fingerprint."""
    dest, errors_dest = Path(dest), Path(errors_dest)
    journal = dest.with_name(dest.name + ".journal")
    marker = dest.with_name(dest.name + ".done")
    if marker.exists() and not journal.exists() and dest.exists() and errors_dest.exists():
        done_before = _read_marker(marker)
        if done_before.get("fingerprint") == run_id:
            return _summary_of_files(dest, errors_dest, done_before.get("items", 0))
    marker.unlink(missing_ok=True)
    done = _recover(journal, run_id)
    summary = Summary(resumed_at=done)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if done == 0 and os.fstat(fd).st_size == 0:
            os.write(fd, (json.dumps({"fingerprint": run_id}) + "\n").encode())
        for result in results_from(done):
            line = json.dumps({"ok": result.ok, "rows": result.rows}, ensure_ascii=False) + "\n"
            os.write(fd, line.encode("utf-8", "surrogatepass"))
            if on_result:
                on_result(result)
    finally:
        os.close(fd)
    _finish(journal, dest, errors_dest, marker, run_id, summary)
    return summary


def _recover(journal: Path, run_id: str) -> int:
    """How many items the journal holds; a torn last line is cut off, and a
    journal of another run is discarded."""
    if not journal.exists():
        return 0
    with open(journal, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    complete = lines[:-1]  # whatever follows the last newline is torn
    try:
        header = json.loads(complete[0]) if complete else None
    except ValueError:
        header = None
    if not header or header.get("fingerprint") != run_id:
        journal.unlink()
        return 0
    good = 1
    for line in complete[1:]:
        try:
            json.loads(line)
        except ValueError:
            break
        good += 1
    keep = sum(len(line) + 1 for line in complete[:good])
    if keep != len(data):
        os.truncate(journal, keep)
    return good - 1


def _finish(journal: Path, dest: Path, errors_dest: Path, marker: Path, run_id: str,
            summary: Summary) -> None:
    with open(journal, "rb") as source, open_atomic(dest, only_writer=True) as out, \
            open_atomic(errors_dest, only_writer=True) as err:
        next(source)  # the fingerprint
        for raw in source:
            entry = json.loads(raw)
            summary.items += 1
            target = out if entry["ok"] else err
            for row in entry["rows"]:
                target.write(json.dumps(row, ensure_ascii=False) + "\n")
            if entry["ok"]:
                summary.ok += len(entry["rows"])
            else:
                summary.errors += len(entry["rows"])
    marker.write_text(json.dumps({"fingerprint": run_id, "items": summary.items}) + "\n")
    journal.unlink()


def _read_marker(marker: Path) -> dict:
    try:
        found = json.loads(marker.read_text())
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _summary_of_files(dest: Path, errors_dest: Path, items: int) -> Summary:
    return Summary(items=items, ok=count_rows(dest), errors=count_rows(errors_dest), already_done=True)
