"""The codeio-jax command, run as a user runs it."""

import json
import os
import re
import subprocess
import sys

from tests.data.test_ios import COIN_CHANGE


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "codeio_jax.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_ios_command(tmp_path):
    source = tmp_path / "records.jsonl"
    source.write_text(json.dumps(COIN_CHANGE) + "\n{broken\n")
    out = tmp_path / "with_ios.jsonl"
    done = cli("ios", "--in", source, "--out", out, "--seed", 3)
    assert done.returncode == 0, done.stderr
    assert "2 records in, 1 with pairs, 1 errors, 10 pairs" in done.stdout
    assert len(json.loads(out.read_text())["ios"]) == 10
    errors = [json.loads(line) for line in (tmp_path / "with_ios.errors.jsonl").read_text().splitlines()]
    assert errors[0]["line"] == 2 and "not valid JSON" in errors[0]["error"]
    again = tmp_path / "again.jsonl"
    assert cli("ios", "--in", source, "--out", again, "--seed", 3).returncode == 0
    assert again.read_bytes() == out.read_bytes()


def test_ios_command_missing_input(tmp_path):
    done = cli("ios", "--in", tmp_path / "nope.jsonl", "--out", tmp_path / "o.jsonl")
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_verify_command(tmp_path):
    rows = [
        {"id": "a", "task": "output_prediction", "response": '{"output": 3}', "output": 3},
        {"id": "b", "task": "output_prediction", "response": "no idea", "output": 3},
        {"id": "c", "task": "input_prediction", "response": '{"input": {"coins": [1, 2], "amount": 4}}',
         "output": 2, "refcode": COIN_CHANGE["refcode"]},
        {"id": "d", "task": "input_prediction", "response": '{"input": {"coins": [1, 2], "amount": 4}}',
         "output": 2},
        {"id": "e", "task": "translation", "response": "", "output": 1},
    ]
    source = tmp_path / "replies.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "verdicts.jsonl"
    done = cli("verify", "--in", source, "--out", out)
    assert done.returncode == 0, done.stderr
    result = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("verdict", {}).get("status") for r in result] == ["correct", "no_answer", "correct", None, None]
    assert "refcode" in result[3]["error"] and "task" in result[4]["error"]
    assert "correct 2" in done.stdout and "invalid_row 2" in done.stdout


def test_sandbox_check_command():
    done = cli("sandbox-check", "--workers", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("network namespace" in line for line in lines)
    assert any("unprivileged uid" in line for line in lines)


def test_bad_python_is_a_clear_error(tmp_path):
    done = cli("sandbox-check", "--python", tmp_path / "no-such-python")
    assert done.returncode == 2
    assert "cannot start the sandbox interpreter" in done.stderr and "Traceback" not in done.stderr


def test_stage_commands_chain_to_the_pipelines_output(tmp_path):
    """ios, prompts, respond, verify (twice), assemble, write one by one give
    the files `codeio-jax pipeline` gives."""
    source = tmp_path / "corpus.jsonl"
    from codeio_jax.data.ios import DEFAULT_CORPUS

    source.write_text("".join(DEFAULT_CORPUS.read_text().splitlines(keepends=True)[:3]))
    whole = tmp_path / "whole"
    done = cli("pipeline", "--gin_file", "data/codeio_pp.gin", "--work_dir", whole,
               f"--gin.run_pipeline.source='{source}'", "--gin.run_pipeline.per_task=1", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "respond_2" in done.stdout and "write" in done.stdout
    steps = tmp_path / "steps"
    steps.mkdir()
    chain = [("ios", source, "with_ios.jsonl", []),
             ("prompts", "with_ios.jsonl", "prompts.jsonl", ["--per-task", 1]),
             ("respond", "prompts.jsonl", "responses_1.jsonl", ["--turn", 1]),
             ("verify", "responses_1.jsonl", "verdicts_1.jsonl", []),
             ("respond", "verdicts_1.jsonl", "responses_2.jsonl", ["--turn", 2]),
             ("verify", "responses_2.jsonl", "verdicts_2.jsonl", []),
             ("assemble", "verdicts_2.jsonl", "examples.jsonl", [])]
    for command, inp, out, extra in chain:
        done = cli(command, "--in", steps / inp, "--out", steps / out, *extra)
        assert done.returncode == 0, (command, done.stderr)
        assert (steps / out).read_bytes() == (whole / out).read_bytes(), command
    done = cli("write", "--in", steps / "examples.jsonl", "--out-dir", steps / "tfrecords")
    assert done.returncode == 0 and "6 examples into 4 shards" in done.stdout
    for shard in (whole / "tfrecords").glob("*.tfrecord-*"):
        assert (steps / "tfrecords" / shard.name).read_bytes() == shard.read_bytes()


def test_pipeline_gin_errors_are_clear(tmp_path):
    done = cli("pipeline", "--gin_file", "data/codeio.gin", "--work_dir", tmp_path,
               "--gin.run_pipline.rounds=1")
    assert done.returncode == 2 and "run_pipline" in done.stderr
    done = cli("pipeline", "--gin_file", "data/nope.gin", "--work_dir", tmp_path)
    assert done.returncode == 2 and "data/nope.gin" in done.stderr and "not found" in done.stderr
    done = cli("pipeline", "--gin_file", "data/codeio.gin")
    assert done.returncode == 2 and "work_dir" in done.stderr
    done = cli("ios", "--in", "x", "--out", "y", "--gin.run_pipeline.rounds=1")
    assert done.returncode == 2 and "unrecognized" in done.stderr


def test_import_command(tmp_path):
    source = tmp_path / "released.jsonl"
    source.write_text(json.dumps({"prompt": 'predict ... {"output": <your output>}', "turn_1": "r",
                                  "feedback_1": "", "turn_2": "", "feedback_2": ""}) + "\n")
    done = cli("import", "--in", source, "--out", tmp_path / "examples.jsonl")
    assert done.returncode == 0 and "1 in, 1 rows out, 0 errors" in done.stdout


def test_off_a_terminal_long_work_logs_lines_at_an_interval(tmp_path):
    from codeio_jax.data import ios

    rows = ios.DEFAULT_CORPUS.read_text().splitlines()
    source = tmp_path / "corpus.jsonl"
    source.write_text("\n".join(json.dumps({**json.loads(r), "id": f"{json.loads(r)['id']}-{k}"})
                                for k in range(4) for r in rows) + "\n")
    done = subprocess.run([sys.executable, "-m", "codeio_jax.cli", "ios", "--in", str(source), "--out",
                           str(tmp_path / "out.jsonl"), "--workers", "1"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CODEIO_JAX_PROGRESS_S": "0.2"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("records: ")]
    assert len(lines) >= 2, done.stderr[-2000:]  # stderr is a pipe here: no bar, log lines instead
    pattern = re.compile(r"records: [\d,]+ of 232 records, [\d,.]+/s, (kept [\d,]+)?.*about .+ left")
    assert all(pattern.match(line) for line in lines), lines
    done_counts = [int(re.match(r"records: ([\d,]+)", line).group(1).replace(",", "")) for line in lines]
    assert done_counts == sorted(done_counts) and done_counts[-1] <= 232


def test_the_pipeline_prints_each_stage_as_it_finishes(tmp_path):
    done = cli("pipeline", "--gin_file", "data/codeio_pp.gin", "--work_dir", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-2000:]
    finished = [line.split(":")[0] for line in done.stderr.splitlines() if "done in" in line]
    assert finished == ["ios", "decontaminate", "dedup", "prompts", "respond_1", "verify_1", "respond_2", "verify_2", "assemble"]
    assert "ios: 58 of 58 rows" in done.stderr
