"""The Beam pipeline on the DirectRunner writes what the local driver writes,
byte for byte, errors included; Beam's own flags pass through."""

import json
from pathlib import Path

import pytest

from codeio_jax.data.beam_pipeline import run_beam_pipeline
from codeio_jax.data.ios import DEFAULT_CORPUS
from codeio_jax.data.pipeline import ChatTeacherSpec, PipelineError, TraceTeacherSpec, run_pipeline
from tests.conftest import shared_data
from tests.teachers.chat_server import ChatServer

SETTINGS = dict(per_task=2, rounds=1)


def corpus_lines(n):
    return DEFAULT_CORPUS.read_text().splitlines(keepends=True)[:n]


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def both(tmp_path, source, beam_args=(), **settings):
    """The local run's work folder and the Beam run's counts and output folder."""
    local = tmp_path / "local"
    run_pipeline(work_dir=local, source=source, workers=2, **SETTINGS, **settings)
    beam = tmp_path / "beam"
    counts = run_beam_pipeline(source, beam, beam_args=beam_args, **SETTINGS, **settings)
    return local, counts, beam


def test_direct_runner_output_equals_the_local_driver(tmp_path):
    source = tmp_path / "corpus.jsonl"
    # One more record carries a CRUXEval program (sample_5) beside its own code: decontamination drops it.
    row = json.loads(corpus_lines(13)[-1])
    crux = next(json.loads(line) for line in shared_data("cruxeval/cruxeval.jsonl").read_text().splitlines()
                if json.loads(line)["id"] == "sample_5")
    contaminated = json.dumps({**row, "id": "contaminated", "refcode": crux["code"] + "\n\n" + row["refcode"]})
    # And one is the third record again under an id that sorts first: deduplication keeps it, drops the third.
    copy = json.dumps({**json.loads(corpus_lines(3)[-1]), "id": "0-copy"})
    source.write_text("".join(corpus_lines(12)) + contaminated + "\n" + copy + "\n")
    local, counts, beam = both(tmp_path, source)
    expected = (local / "examples.jsonl").read_bytes()
    assert (beam / "examples.jsonl").read_bytes() == expected
    assert counts == {"records": 14, "examples": 12 * 4, "errors": 2}
    duplicate, dropped = read(beam / "errors.jsonl")
    assert dropped["id"] == "contaminated" and dropped["benchmark_item"] == "sample_5"
    assert duplicate["line"] == 3 and duplicate["kept_id"] == "0-copy" and duplicate["match"] == "exact"
    (local_duplicate,) = read(local / "deduplicated.errors.jsonl")  # lines are each stage input's own
    assert {**local_duplicate, "line": 3, "error": duplicate["error"]} == duplicate


def test_bad_lines_become_error_rows_and_the_rest_flows(tmp_path):
    lines = corpus_lines(8)
    no_code = json.loads(lines[4])
    del no_code["refcode"]
    source = tmp_path / "corpus.jsonl"
    # Line 4 is not JSON, line 5 is blank (no record), line 6 lacks its code.
    source.write_text("".join([*lines[:3], '{"id": "torn", \n', "\n", json.dumps(no_code) + "\n",
                               *lines[5:]]))
    # The local threads of the DirectRunner: Beam's flags reach the runner.
    local, counts, beam = both(tmp_path, source, beam_args=[
        "--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    assert (beam / "examples.jsonl").read_bytes() == (local / "examples.jsonl").read_bytes()
    errors = read(beam / "errors.jsonl")
    assert errors == read(local / "with_ios.errors.jsonl")  # the same rows, the same order
    assert [(e["stage"], e["line"], e["id"]) for e in errors] == [
        ("ios", 4, "line-4"), ("ios", 6, no_code["id"])]
    assert "not valid JSON" in errors[0]["error"] and "`refcode` is missing" in errors[1]["error"]
    assert counts == {"records": 8, "examples": 6 * 4, "errors": 2}


def student(messages):
    """A weak first-turn model: guesses 0 for every output, an empty input."""
    if "What does the code return?" in messages[-1]["content"]:
        return 'Guessing.\n{"output": 0}'
    return 'Guessing.\n{"input": {}}'


def test_a_chat_teacher_then_the_trace_teacher_revising(tmp_path):
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(corpus_lines(4)))
    with ChatServer(answer=student) as server:
        spec = ChatTeacherSpec(base_url=server.base_url, model="student", api_key_env=None)
        local, counts, beam = both(tmp_path, source, turn_teachers=(spec, TraceTeacherSpec()))
    assert (beam / "examples.jsonl").read_bytes() == (local / "examples.jsonl").read_bytes()
    examples = read(beam / "examples.jsonl")
    assert any(e["turns"] == 2 for e in examples) and all(e["status"] == "correct" for e in examples)
    assert (beam / "teacher_cache").is_dir()  # the spec was built on the worker with its cache


def test_an_unknown_runner_is_a_clear_error(tmp_path):
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(corpus_lines(1)))
    with pytest.raises(PipelineError, match="Unexpected pipeline runner: NoSuchRunner. Valid values"):
        run_beam_pipeline(source, tmp_path / "beam", beam_args=["--runner=NoSuchRunner"])
    with pytest.raises(PipelineError, match="rounds must be 0 or more"):
        run_beam_pipeline(source, tmp_path / "beam", rounds=-1)


def test_two_worker_processes_give_the_local_bytes(tmp_path):
    # Separate processes: every DoFn, signature and the dedup links cross a pickle.
    source = tmp_path / "corpus.jsonl"
    copy = json.dumps({**json.loads(corpus_lines(2)[-1]), "id": "0-copy"})
    source.write_text("".join(corpus_lines(8)) + copy + "\n")
    local, counts, beam = both(tmp_path, source, beam_args=[
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert (beam / "examples.jsonl").read_bytes() == (local / "examples.jsonl").read_bytes()
    assert counts == {"records": 9, "examples": 8 * 4, "errors": 1}
    (duplicate,) = read(beam / "errors.jsonl")
    assert duplicate["stage"] == "dedup" and duplicate["kept_id"] == "0-copy"
