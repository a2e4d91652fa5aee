"""The resumable driver: kill -9 at any moment, rerun, same bytes."""

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeio_jax.data import ios
from codeio_jax.data.driver import Result, run_resumable
from codeio_jax.records import temporary_name


def numbers(skip, upto=10, fail_at=None):
    for i in range(skip, upto):
        if i == fail_at:
            raise RuntimeError("stage crashed")
        yield Result.one(i % 3 != 0, {"i": i})


def crashed_at_6(tmp_path):
    """(out, err) of run-1 after its stage crashed at item 6: a journal of 6 items."""
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    with pytest.raises(RuntimeError):
        run_resumable(out, err, "run-1", lambda skip: numbers(skip, fail_at=6))
    return out, err


def test_resume_after_a_crash_and_a_torn_line(tmp_path):
    out, err = crashed_at_6(tmp_path)
    journal = tmp_path / "out.jsonl.journal"
    with open(journal, "ab") as f:
        f.write(b'{"ok": true, "row": {"i": 6')  # a line torn by the kill
    calls = []
    summary = run_resumable(out, err, "run-1", lambda skip: calls.append(skip) or numbers(skip))
    assert calls == [6] and summary.resumed_at == 6
    assert [json.loads(line)["i"] for line in out.read_text().splitlines()] == [1, 2, 4, 5, 7, 8]
    assert [json.loads(line)["i"] for line in err.read_text().splitlines()] == [0, 3, 6, 9]
    assert not journal.exists() and (tmp_path / "out.jsonl.done").exists()


def test_done_runs_are_skipped_and_other_runs_start_over(tmp_path):
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    run_resumable(out, err, "run-1", numbers)
    again = run_resumable(out, err, "run-1", lambda skip: (_ for _ in ()).throw(AssertionError("reran")))
    assert again.already_done and again.items == 10
    other = run_resumable(out, err, "run-2", lambda skip: numbers(skip, upto=4))
    assert not other.already_done and other.items == 4


def test_a_run_killed_while_it_wrote_its_outputs_leaves_nothing_behind_the_rerun(tmp_path):
    # What a kill inside the final write leaves: the journal, and half-written
    # outputs under their temporary names (each writer's own, so no rerun would
    # ever overwrite them).
    out, err = crashed_at_6(tmp_path)
    for path in (out, err):
        Path(temporary_name(path)).write_text('{"i": 1}\n{"i"')
    run_resumable(out, err, "run-1", numbers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.jsonl", "out.jsonl", "out.jsonl.done"]


def test_kill_minus_9_at_random_moments_gives_the_same_bytes(tmp_path):
    rows = [json.loads(line) for line in ios.DEFAULT_CORPUS.read_text().splitlines()]
    source = tmp_path / "corpus.jsonl"
    lines = [json.dumps({**row, "id": f"{row['id']}-{k}"}) for k in range(4) for row in rows]
    lines.insert(50, "{not json")  # an error row in the middle, too
    source.write_text("\n".join(lines) + "\n")

    def command(out):
        return [sys.executable, "-m", "codeio_jax.cli", "ios", "--in", str(source), "--out", str(out)]

    reference = tmp_path / "reference.jsonl"
    subprocess.run(command(reference), check=True, capture_output=True, timeout=120)
    out = tmp_path / "interrupted.jsonl"
    journal = tmp_path / "interrupted.jsonl.journal"
    rng = random.Random(7)
    journal_sizes = []
    for _ in range(6):
        before = len(journal.read_bytes().splitlines()) if journal.exists() else 0
        process = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill once this run has journalled a random number of rows of its own: a moment chosen
        # by progress, not by a delay, so neither a loaded machine (slow start) nor a fast one
        # (the run done before the kill) moves it out of the run.
        target = before + rng.randint(2, 30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None and (
                not journal.exists() or len(journal.read_bytes().splitlines()) < target):
            time.sleep(0.002)
        process.kill()  # sends nothing if the run has ended
        process.wait()
        journal_sizes.append(len(journal.read_bytes().splitlines()) if journal.exists() else 0)
    # The kills landed mid-run: the journal grew but was not finished.
    assert any(1 < size < 234 for size in journal_sizes), journal_sizes
    subprocess.run(command(out), check=True, capture_output=True, timeout=120)
    assert out.read_bytes() == reference.read_bytes()
    errors = tmp_path / "interrupted.errors.jsonl"
    assert errors.read_bytes() == (tmp_path / "reference.errors.jsonl").read_bytes()
    assert len(out.read_text().splitlines()) == 232 and len(errors.read_text().splitlines()) == 1
    assert not (tmp_path / "interrupted.jsonl.journal").exists()
