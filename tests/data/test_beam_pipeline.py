"""The Beam pipeline on the DirectRunner writes the shards the local driver
writes, byte for byte, errors included, from a path or a glob; bad sources
fail before the job starts; Beam's own flags pass through."""

import json
import os
from pathlib import Path

import pytest

from codeio_jax.data import shards
from codeio_jax.data.beam_pipeline import run_beam_pipeline
from codeio_jax.data.ios import DEFAULT_CORPUS
from codeio_jax.data.pipeline import ChatTeacherSpec, PipelineError, TraceTeacherSpec, run_pipeline
from tests.conftest import shared_data
from tests.data.test_pipeline import TRANSFORM_REPLY, transform_model, write_raw_corpus
from tests.teachers.chat_server import ChatServer

SETTINGS = dict(per_task=2, rounds=1)
TWO_PROCESSES = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def corpus_lines(n):
    return DEFAULT_CORPUS.read_text().splitlines(keepends=True)[:n]


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def shard_files(work):
    folder = Path(work) / "tfrecords"
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))
            if name.startswith("codeio_")}


def error_rows(work):
    return list(shards.read_jsonl_shards(shards.ShardSet(shards.ERRORS, 4, ("jsonl",), str(Path(work) / "tfrecords"))))


def both(tmp_path, source, beam_args=(), **settings):
    """The local run's work folder and the Beam run's counts and output folder;
    their shards are the same bytes."""
    local = tmp_path / "local"
    run_pipeline(work_dir=local, source=source, workers=2, **{**SETTINGS, **settings})
    beam = tmp_path / "beam"
    counts = run_beam_pipeline(source, beam, beam_args=beam_args, **{**SETTINGS, **settings})
    found = shard_files(beam)
    assert len(found) == 4 * 3 + 1  # examples as TFRecords and JSONL, errors, the counts
    assert found == shard_files(local)
    return local, counts, beam


def test_two_worker_processes_over_a_glob_write_the_local_bytes(tmp_path):
    # Separate processes: every DoFn, signature and the dedup links cross a pickle.
    # One more record carries a CRUXEval program (sample_5) beside its own code: decontamination drops it.
    row = json.loads(corpus_lines(13)[-1])
    crux = next(json.loads(line) for line in shared_data("cruxeval/cruxeval.jsonl").read_text().splitlines()
                if json.loads(line)["id"] == "sample_5")
    contaminated = json.dumps({**row, "id": "contaminated", "refcode": crux["code"] + "\n\n" + row["refcode"]})
    # And one is the third record again under an id that sorts first: deduplication keeps it, drops the third.
    copy = json.dumps({**json.loads(corpus_lines(3)[-1]), "id": "0-copy"})
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "part-1.jsonl").write_text("".join(corpus_lines(12)[:7]))
    (tmp_path / "corpus" / "part-2.jsonl").write_text("".join(corpus_lines(12)[7:]) + contaminated + "\n" + copy
                                                      + "\n")
    local, counts, beam = both(tmp_path, str(tmp_path / "corpus" / "*.jsonl"), beam_args=TWO_PROCESSES)
    assert counts == {"records": 14, "examples": 12 * 4, "errors": 2}
    by_stage = {row["stage"]: row for row in error_rows(beam)}
    assert by_stage["decontaminate"]["id"] == "contaminated"
    assert by_stage["decontaminate"]["benchmark_item"] == "sample_5"
    duplicate = by_stage["dedup"]
    assert duplicate["kept_id"] == "0-copy" and duplicate["match"] == "exact" and "line" not in duplicate
    (local_duplicate,) = read(local / "deduplicated.errors.jsonl")  # its line is that stage input's own
    assert {name: value for name, value in local_duplicate.items() if name != "line"} == duplicate


def test_bad_lines_become_error_rows_named_by_file_and_offset(tmp_path):
    lines = corpus_lines(8)
    no_code = json.loads(lines[4])
    del no_code["refcode"]
    released = {"prompt": "What does it return?", "turn_1": "It returns 1."}
    huge = json.dumps({**json.loads(lines[5]), "id": "huge", "refcode": "x = 1\n" * 800_000})
    source = tmp_path / "corpus.jsonl"
    # Line 4 is not JSON, then a blank line, then a record without code, a row of
    # the released format, and one over the size limit for a line.
    text = "".join([*lines[:3], '{"id": "torn", \n', "\n", json.dumps(no_code) + "\n",
                    json.dumps(released) + "\n", huge + "\n", *lines[5:]])
    source.write_text(text)
    # The local threads of the DirectRunner: Beam's flags reach the runner.
    local, counts, beam = both(tmp_path, source, beam_args=["--direct_num_workers=2",
                                                            "--direct_running_mode=multi_threading"])
    errors = sorted(error_rows(beam), key=lambda row: row.get("offset") or 0)
    assert counts == {"records": 10, "examples": 6 * 4, "errors": 4}
    data = text.encode("utf-8")
    offsets = [data.index(part.encode("utf-8")) for part in ('{"id": "torn"', json.dumps(no_code),
                                                               json.dumps(released), huge)]
    assert [(e["stage"], e["id"], e["offset"]) for e in errors] == [
        ("ios", None, offsets[0]), ("ios", no_code["id"], offsets[1]), ("ios", None, offsets[2]),
        ("ios", None, offsets[3])]  # a line too long to read has no id to tell
    assert "not valid JSON" in errors[0]["error"] and "`refcode` is missing" in errors[1]["error"]
    assert "a released row (import input) in a source of unified rows" in errors[2]["error"]
    assert "over the 4194304-byte limit" in errors[3]["error"]
    assert all(e["file"] == str(source) for e in errors)


def test_released_rows_import_on_both_engines(tmp_path):
    source = tmp_path / "released.jsonl"
    rows = [{"prompt": f'Predict... answer as {{"output": <your output>}} #{i}', "turn_1": f"It is {i}.",
             "feedback_1": None, "turn_2": None, "feedback_2": None} for i in range(30)]
    rows[7] = {"prompt": "Which input?", "turn_1": "no form named"}  # asks for neither
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    local, counts, beam = both(tmp_path, source, beam_args=TWO_PROCESSES)
    assert counts == {"records": 30, "examples": 29, "errors": 1}
    (error,) = error_rows(beam)
    assert error["stage"] == "import" and "neither an output nor an input" in error["error"]


def test_raw_code_is_transformed_on_beam_as_locally(tmp_path):
    raw = write_raw_corpus(tmp_path / "raw.jsonl")
    with ChatServer(answer=transform_model) as server:
        spec = ChatTeacherSpec(base_url=server.base_url, model="m", api_key_env=None)
        local, counts, beam = both(tmp_path, raw, transform_teacher=spec, per_task=1, rounds=0)
    assert counts == {"records": 3, "examples": 2, "errors": 2}
    assert sorted((row["id"] or "", row["error"][:12]) for row in error_rows(beam)) == [
        ("", "no code: fie"), ("b2", "unusable rep")]
    assert (beam / "teacher_cache").is_dir()  # the teacher was built on the worker, with its cache


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
    examples = list(shards.read_jsonl_shards(shards.ShardSet(shards.EXAMPLES, 4, ("jsonl",),
                                                             str(beam / "tfrecords"))))
    assert any(e["turns"] == 2 for e in examples) and all(e["status"] == "correct" for e in examples)


def test_bad_sources_and_settings_fail_before_the_job_starts(tmp_path):
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(corpus_lines(1)))
    with pytest.raises(PipelineError, match="Unexpected pipeline runner: NoSuchRunner. Valid values"):
        run_beam_pipeline(source, tmp_path / "beam", beam_args=["--runner=NoSuchRunner"])
    with pytest.raises(PipelineError, match="rounds must be 0 or more"):
        run_beam_pipeline(source, tmp_path / "beam", rounds=-1)
    with pytest.raises(PipelineError, match=r"the source pattern .*/nothing-\*.jsonl matches no file"):
        run_beam_pipeline(str(tmp_path / "nothing-*.jsonl"), tmp_path / "beam")
    with pytest.raises(PipelineError, match="is a folder: name its files"):
        run_beam_pipeline(tmp_path, tmp_path / "beam")
    (tmp_path / "notes.jsonl").write_text("These are my notes.\n")
    with pytest.raises(PipelineError, match="notes.jsonl is not JSONL: its first line is not valid JSON"):
        run_beam_pipeline(str(tmp_path / "*.jsonl"), tmp_path / "beam")
    (tmp_path / "notes.jsonl").write_text(json.dumps({"prompt": "p", "turn_1": "t"}) + "\n")
    with pytest.raises(PipelineError, match="the source mixes row formats"):
        run_pipeline(work_dir=tmp_path / "local", source=str(tmp_path / "*.jsonl"))
    assert not (tmp_path / "beam").exists() and not (tmp_path / "local").exists()


def withheld_protection():
    from codeio_jax.execution import PROTECTIONS, Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(workers=1)) as box:
        granted = box.protections
    missing = [name for name in PROTECTIONS if granted.get(name) in (None, False, [], "")]
    if not missing:
        pytest.skip("this kernel grants every protection: none to withhold")
    return missing[0]


def test_a_worker_without_the_required_protections_runs_no_code_and_says_so(tmp_path):
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(corpus_lines(5)))
    withheld = withheld_protection()
    counts = run_beam_pipeline(source, tmp_path / "beam", require_protections=(withheld,),
                               beam_args=TWO_PROCESSES)
    assert counts == {"records": 5, "examples": 0, "errors": 5}
    errors = error_rows(tmp_path / "beam")
    assert {row["stage"] for row in errors} == {"ios"}
    assert all(f"could not get {withheld} (required)" in row["error"] for row in errors)
    with pytest.raises(PipelineError, match=f"could not get {withheld} \\(required\\).*require_protections"):
        run_pipeline(work_dir=tmp_path / "local", source=source, require_protections=(withheld,))
    with pytest.raises(PipelineError, match="unknown protections"):
        run_beam_pipeline(source, tmp_path / "beam", require_protections=("networking",))


def test_a_remote_source_work_folder_and_teacher_cache(tmp_path, monkeypatch):
    # `mirror://` stands for gs://: a path pathlib would mangle, on a filesystem
    # Beam reaches by its scheme (tests/data/mirror_filesystem.py).
    from tests.data import mirror_filesystem

    monkeypatch.setenv("MIRROR_FILESYSTEM_ROOT", str(tmp_path / "bucket"))
    (tmp_path / "bucket" / "corpus").mkdir(parents=True)
    raw = [json.dumps({"blob_id": f"b{i}", "content": f"def total_{i}(n):\n    return n * {i}\n"}) for i in range(3)]
    (tmp_path / "bucket" / "corpus" / "raw-0.jsonl").write_text("\n".join(raw[:2]) + "\n")
    (tmp_path / "bucket" / "corpus" / "raw-1.jsonl").write_text(raw[2] + "\n" + json.dumps({"blob_id": "b9"}) + "\n")
    (tmp_path / "local-corpus").mkdir()
    for name in ("raw-0.jsonl", "raw-1.jsonl"):
        (tmp_path / "local-corpus" / name).write_bytes((tmp_path / "bucket" / "corpus" / name).read_bytes())
    with ChatServer(answer=lambda messages: TRANSFORM_REPLY) as server:
        spec = ChatTeacherSpec(base_url=server.base_url, model="m", api_key_env=None)
        settings = dict(transform_teacher=spec, per_task=1, rounds=0)
        run_pipeline(work_dir=tmp_path / "local", source=str(tmp_path / "local-corpus" / "*.jsonl"), workers=2,
                     **settings)
        asked = server.hits
        counts = run_beam_pipeline(f"{mirror_filesystem.PREFIX}corpus/*.jsonl",
                                   f"{mirror_filesystem.PREFIX}runs/pp", **settings)
        assert server.hits == 2 * asked  # a cache of its own, on the remote filesystem
        run_beam_pipeline(f"{mirror_filesystem.PREFIX}corpus/*.jsonl", f"{mirror_filesystem.PREFIX}runs/again",
                          cache_dir=f"{mirror_filesystem.PREFIX}runs/pp/teacher_cache", **settings)
        assert server.hits == 2 * asked  # the workers found every reply in the shared cache
    # One program for every file (the teacher's one reply): dedup keeps b0's.
    assert counts == {"records": 4, "examples": 2, "errors": 3}
    beam = tmp_path / "bucket" / "runs" / "pp"
    assert shard_files(beam) == shard_files(tmp_path / "local")
    assert sorted((row["stage"], row["id"] or "") for row in error_rows(beam)) == [
        ("dedup", "b1"), ("dedup", "b2"), ("transform", "")]
    assert list((beam / "teacher_cache").rglob("*.json"))
    assert not [path.name for path in beam.iterdir() if path.name.startswith(".scratch")]


def test_one_recipe_drives_both_engines_from_the_command_line(tmp_path):
    import subprocess
    import sys

    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(corpus_lines(4)))

    def cli(work, *extra):
        return subprocess.run([sys.executable, "-m", "codeio_jax.cli", "pipeline", "--gin_file", "data/codeio.gin",
                               "--work_dir", str(work), f"--gin.run_pipeline.source='{source}'", *extra],
                              cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)

    local = cli(tmp_path / "local")
    beam = cli(tmp_path / "beam", "--engine", "beam", "--", *TWO_PROCESSES)
    assert local.returncode == 0 and beam.returncode == 0, local.stderr[-2000:] + beam.stderr[-2000:]
    assert "pipeline on Beam: 4 rows read, 24 examples, 0 error rows" in beam.stdout
    assert shard_files(tmp_path / "beam") == shard_files(tmp_path / "local")
    stray = cli(tmp_path / "stray", "--", "--direct_num_workers=2")
    assert stray.returncode != 0 and "Beam flags need --engine beam" in stray.stderr
