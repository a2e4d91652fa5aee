"""Deduplication (data/dedup.py, stages.dedup_file): copies renamed, reformatted
or slightly edited collapse to the earliest record by key, whatever the order
of the file; every dropped record is an error row naming the one kept."""

import ast
import json

import pytest

from codeio_jax.data import dedup, stages
from codeio_jax.data.ios import DEFAULT_CORPUS
from codeio_jax.data.pipeline import PipelineError, run_pipeline
from tests.planted import Rename


def records():
    return [json.loads(line) for line in DEFAULT_CORPUS.read_text().splitlines()]


def renamed(code):
    """Every name changed, laid out again by ast.unparse, a comment on top."""
    return "# a copy\n" + ast.unparse(Rename().visit(ast.parse(code)))


def edited(code):
    """One statement of our own at the top of the first function's body."""
    lines = code.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("def "))
    body = lines[at + 1]
    indent = body[:len(body) - len(body.lstrip())]
    return "\n".join([*lines[:at + 1], indent + "checked_steps = 0", *lines[at + 1:]]) + "\n"


def longest(rows):
    return max(rows, key=lambda row: len(row["refcode"]))


def run(tmp_path, rows, name="out"):
    source = tmp_path / f"{name}.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dest, errors = tmp_path / f"{name}.kept.jsonl", tmp_path / f"{name}.errors.jsonl"
    summary = stages.dedup_file(source, dest, errors, dedup.Settings())
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines()]  # noqa: E731
    return summary, read(dest), read(errors)


def test_copies_collapse_to_the_earliest_by_key_in_any_order(tmp_path):
    rows = records()
    original, near = rows[3], longest(rows)
    exact_copy = {**original, "id": "0-copy", "refcode": renamed(original["refcode"])}  # sorts first: kept
    near_copy = {**near, "id": "zz-near", "refcode": edited(near["refcode"])}
    broken = {**rows[0], "id": "broken", "refcode": "def main_solution(:\n"}
    corpus = [*rows, exact_copy, near_copy, broken]
    summary, kept, errors = run(tmp_path, corpus)
    assert (summary.items, summary.ok, summary.errors) == (61, 58, 3)
    by_id = {row["id"]: row for row in errors}
    assert set(by_id) == {original["id"], "zz-near", "broken"}
    exact = by_id[original["id"]]
    assert (exact["match"], exact["kept_id"], exact["duplicate_of"], exact["jaccard"]) == (
        "exact", "0-copy", "0-copy", 1.0)
    assert "the same program" in exact["error"]
    close = by_id["zz-near"]
    assert close["match"] == "near" and close["kept_id"] == near["id"] and 0.8 <= close["jaccard"] < 1.0
    assert "Jaccard" in close["error"] and "MinHash estimate" in close["error"]
    assert "cannot be compared" in by_id["broken"]["error"]
    # Reversed, the file keeps the same records and drops the same ones, for the same reasons.
    _, kept_again, errors_again = run(tmp_path, corpus[::-1], "reversed")
    assert sorted(row["id"] for row in kept_again) == sorted(row["id"] for row in kept)
    strip = lambda rows: sorted((r["id"], r.get("kept_id"), r.get("match")) for r in rows)  # noqa: E731
    assert strip(errors_again) == strip(errors)


def test_unrelated_programs_stay_and_lines_that_are_not_json_are_error_rows(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in records()[:5]) + "{torn\n")
    summary = stages.dedup_file(source, tmp_path / "kept.jsonl", tmp_path / "errors.jsonl", dedup.Settings())
    assert (summary.ok, summary.errors) == (5, 1)
    (torn,) = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert torn["line"] == 6 and "not valid JSON" in torn["error"]


def test_a_chain_of_copies_points_at_the_record_kept():
    a, b, c = ("a", "", 1), ("b", "", 2), ("c", "", 3)
    dropped = {b: dedup.Link(b, a, "near", 0.85), c: dedup.Link(c, b, "near", 0.9)}
    assert dedup.kept_for(dropped[c], dropped) == a
    assert "itself a copy, a is kept" in dedup.reason(dropped[c], a, dedup.Settings())
    # Of one record's links, the earliest copy wins; an exact match breaks a tie.
    assert dedup.earliest([dedup.Link(c, b, "near", 0.9), dedup.Link(c, a, "near", 0.81)]).of == a


@pytest.mark.parametrize("settings, message", [
    (dict(threshold=0.0), "threshold must be in"), (dict(num_perm=4), "num_perm"), (dict(shingle=0), "shingle")])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        dedup.Settings(**settings)


def test_the_pipeline_names_a_bad_threshold(tmp_path):
    with pytest.raises(PipelineError, match="dedup_threshold"):
        run_pipeline(work_dir=tmp_path, dedup_threshold=1.5)


def test_a_signature_written_for_a_sorted_run_reads_back_the_same():
    settings = dedup.Settings()
    rows = [json.loads(line) for line in DEFAULT_CORPUS.read_text().splitlines()[:2]]
    first, second = (dedup.signature(line, row, settings) for line, row in enumerate(rows, start=1))
    entries = list(dedup.bucket_entries(first, settings))
    assert len(entries) == 1 + len(settings.bands)  # its tree's bucket and one per band
    assert sorted(dedup.bucket_of(key) for key, _ in entries) == sorted(b.hex() for b in dedup.buckets(first, settings))
    back = dedup.signature_from_text(entries[0][1])
    assert back.key == first.key and back.exact == first.exact
    assert back.minhash.jaccard(second.minhash) == first.minhash.jaccard(second.minhash)
    assert back.minhash.jaccard(first.minhash) == 1.0
