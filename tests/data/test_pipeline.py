"""The whole data pipeline: trace teacher offline, a model over real HTTP for a
first turn or a transform, resumption after kill -9."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeio_jax.data.ios import DEFAULT_CORPUS
from codeio_jax.data.pipeline import ChatTeacherSpec, PipelineError, TraceTeacherSpec, run_pipeline
from tests.teachers.chat_server import ChatServer

REPO = Path(__file__).resolve().parents[2]


def small_corpus(tmp_path, n=6):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(DEFAULT_CORPUS.read_text().splitlines(keepends=True)[:n]))
    return path


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_trace_teacher_pipeline_verifies_every_answer(tmp_path):
    report = run_pipeline(work_dir=tmp_path / "run", source=small_corpus(tmp_path), per_task=2,
                          rounds=1, workers=2)
    examples = read(report.examples)
    assert len(examples) == 6 * 4
    assert all(e["status"] == "correct" and e["turns"] == 1 and e["turn_2"] == "" for e in examples)
    assert report.stage("respond_2").summary.ok == 24  # passed through: nothing to revise
    assert report.teacher_usage["turn_2"]["requests"] == 0
    again = run_pipeline(work_dir=tmp_path / "run", source=small_corpus(tmp_path), per_task=2,
                         rounds=1, workers=2)
    assert all(stage.summary.already_done for stage in again.stages)


def test_a_write_killed_while_it_spilled_is_redone_from_an_empty_scratch(tmp_path):
    # A kill inside the write stage leaves its run files in .scratch (and no
    # write.done); the rerun must redo the stage, not fail on what it finds.
    work = tmp_path / "run"
    run_pipeline(work_dir=work, source=small_corpus(tmp_path), per_task=2, rounds=1, workers=2)
    shards = work / "tfrecords"
    expected = {p.name: p.read_bytes() for p in shards.iterdir()}
    (shards / "write.done").unlink()
    (shards / ".scratch").mkdir()
    (shards / ".scratch" / "codeio_examples-00000-0f1e2d3c.run").write_text('{"id": "half"}\t{"id"')
    again = run_pipeline(work_dir=work, source=small_corpus(tmp_path), per_task=2, rounds=1, workers=2)
    assert not again.stage("write").summary.already_done
    assert {p.name: p.read_bytes() for p in shards.iterdir()} == expected


def student(messages):
    """A weak first-turn model: guesses 0 for every output, an empty input."""
    if len(messages) > 2:
        return "I cannot revise."
    if "What does the code return?" in messages[-1]["content"]:
        return 'Guessing.\n{"output": 0}'
    return 'Guessing.\n{"input": {}}'


def test_revision_turn_fixes_the_first_turns_failures(tmp_path):
    with ChatServer(answer=student) as server:
        spec = ChatTeacherSpec(base_url=server.base_url, model="student", api_key_env=None)
        report = run_pipeline(work_dir=tmp_path / "run", source=small_corpus(tmp_path), per_task=2,
                              rounds=1, turn_teachers=[spec, TraceTeacherSpec()], workers=2)
        hits = server.hits
    examples = read(report.examples)
    revised = [e for e in examples if e["turns"] == 2]
    assert revised and all(e["status"] == "correct" for e in examples)
    for example in revised:
        assert example["turn_1"].startswith("Guessing.") and example["feedback_1"].startswith(
            ("Incorrect", "Running"))
        assert example["feedback_2"].startswith("Correct") and example["turn_2"]
    first = [e for e in examples if e["turns"] == 1]
    assert all(e["turn_1"].startswith("Guessing.") for e in first)  # a lucky 0 stays as it was
    assert report.teacher_usage["turn_2"]["requests"] == len(revised)
    # The model's replies are cached: a fresh run elsewhere pays for nothing.
    with ChatServer(answer=student) as server:
        spec = ChatTeacherSpec(base_url=server.base_url, model="student", api_key_env=None)
        other = tmp_path / "other"
        (other).mkdir()
        os.symlink(tmp_path / "run" / "teacher_cache", other / "teacher_cache")
        run_pipeline(work_dir=other, source=small_corpus(tmp_path), per_task=2, rounds=1,
                     turn_teachers=[spec, TraceTeacherSpec()], workers=2)
        assert server.hits == 0 and hits == 24
    assert (other / "examples.jsonl").read_bytes() == report.examples.read_bytes()


def test_teacher_failures_are_counted_never_lost(tmp_path):
    with ChatServer() as server:  # echoes; [[status:400]] in a prompt makes it refuse
        corpus = small_corpus(tmp_path, 2)
        rows = read(corpus)
        rows[1]["problem_description"] += " [[status:400]]"
        corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
        spec = ChatTeacherSpec(base_url=server.base_url, model="m", api_key_env=None, max_retries=0)
        report = run_pipeline(work_dir=tmp_path / "run", source=corpus, per_task=1, rounds=0,
                              turn_teachers=[spec], workers=2)
    respond = report.stage("respond_1").summary
    assert (respond.items, respond.ok, respond.errors) == (4, 2, 2)
    errors = read(tmp_path / "run" / "responses_1.errors.jsonl")
    assert all("the teacher failed" in e["error"] and e["row"]["record_id"] == rows[1]["id"] for e in errors)
    examples = read(report.examples)
    assert [e["status"] for e in examples] == ["no_answer", "no_answer"]  # an echo holds no answer


TRANSFORM_REPLY = """### Main function
```python
def main_solution(n):
    return sum(range(n + 1))
```

### Input/output description
Input:
  `n` (int): how far to count, 0 to 50
Output:
  `return` (int): 0 + 1 + ... + n

### Input generator
```python
import random

def input_generator():
    return {"n": random.randint(0, 50)}
```

### Problem statement
What is the sum of all whole numbers from 0 to `n`?
"""


def write_raw_corpus(path: Path) -> Path:
    """Three raw-code rows: one the model transforms, one it refuses, one with no code."""
    path.write_text(json.dumps({"blob_id": "b1", "content": "def total(n):\n    return n*(n+1)//2\n"}) + "\n"
                    + json.dumps({"blob_id": "b2", "content": "print('no')  [[garbage-reply]]"}) + "\n"
                    + json.dumps({"blob_id": "b3"}) + "\n")
    return path


def transform_model(messages):
    """The transform teacher's model: TRANSFORM_REPLY, except for the row marked for garbage."""
    return "Sorry, I cannot." if "garbage-reply" in messages[-1]["content"] else TRANSFORM_REPLY


def test_raw_code_is_transformed_by_a_model_then_runs_offline(tmp_path):
    raw = write_raw_corpus(tmp_path / "raw.jsonl")
    with ChatServer(answer=transform_model) as server:
        spec = ChatTeacherSpec(base_url=server.base_url, model="m", api_key_env=None)
        with pytest.raises(PipelineError, match="only a model can transform"):
            run_pipeline(work_dir=tmp_path / "run", source=raw)
        report = run_pipeline(work_dir=tmp_path / "run", source=raw, transform_teacher=spec,
                              per_task=1, rounds=0, workers=2)
    transform = report.stage("transform").summary
    assert (transform.items, transform.ok, transform.errors) == (3, 1, 2)
    errors = read(tmp_path / "run" / "unified.errors.jsonl")
    assert "unusable reply" in errors[0]["error"] and errors[0]["id"] == "b2"
    assert "no code" in errors[1]["error"] and errors[1]["line"] == 3
    [unified] = read(tmp_path / "run" / "unified.jsonl")
    assert unified["id"] == "b1" and unified["meta"] == {"blob_id": "b1"}
    examples = read(report.examples)
    assert len(examples) == 2 and all(e["status"] == "correct" for e in examples)


def run_cli(work, source, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "codeio_jax.cli", "pipeline", "--gin_file",
                             "data/codeio_pp.gin", "--work_dir", str(work),
                             f"--gin.run_pipeline.source='{source}'", "--gin.run_pipeline.workers=2"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)


def stage_files(work):
    return {p.name: p.read_bytes() for p in sorted(Path(work).glob("*.jsonl"))}


@pytest.mark.slow
def test_kill_9_at_random_moments_ends_byte_identical(tmp_path):
    source = small_corpus(tmp_path, 20)
    reference = tmp_path / "reference"
    started = time.perf_counter()
    assert run_cli(reference, source).wait() == 0
    expected = stage_files(reference)
    assert len(expected) == 18 and expected["examples.jsonl"]
    full = time.perf_counter() - started
    started = time.perf_counter()
    assert run_cli(tmp_path / "timing", source).wait() == 0
    # The faster of two runs: a run slowed by a busy machine would send later kills past the end.
    full = min(full, time.perf_counter() - started)
    rng = random.Random(0)
    landed = 0
    for attempt in range(4):
        work = tmp_path / f"killed{attempt}"
        for _ in range(3):  # three kills in one run, then let it finish
            process = run_cli(work, source)
            # A resumed run has less left to do than a whole one: kills early enough to land.
            time.sleep(rng.uniform(0.05, 0.6) * full)
            landed += process.poll() is None
            process.send_signal(signal.SIGKILL)
            process.wait()
        final = run_cli(work, source)
        _, stderr = final.communicate()
        assert final.returncode == 0, f"attempt {attempt}: {stderr.decode()[-2000:]}"
        assert stage_files(work) == expected, f"attempt {attempt}"
        assert not list(work.glob("*.journal")) and not list(work.glob("*.partial"))
    assert landed >= 8  # most kills did land in the middle of a run


def test_our_own_model_answers_the_first_turn_offline(tmp_path):
    """CodeI/O++ with no server at all: a (random, tiny) local model answers turn 1,
    the trace teacher revises what the verifier rejects."""
    torch = pytest.importorskip("torch")
    import transformers as tr

    from codeio_jax.data.pipeline import LocalTeacherSpec
    from tasks.tokenizer_training import train_bpe

    corpus = small_corpus(tmp_path, 2)
    texts = [json.loads(line)["refcode"] for line in corpus.read_text().splitlines()] * 20
    folder = tmp_path / "model"
    vocab = train_bpe(texts, folder, "qwen2", vocab_size=400)
    size = __import__("tokenizers").Tokenizer.from_file(str(vocab)).get_vocab_size()
    torch.manual_seed(0)
    tr.Qwen2ForCausalLM(tr.Qwen2Config(vocab_size=size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=1,
                                       max_position_embeddings=8192)).save_pretrained(folder)
    spec = LocalTeacherSpec(model=str(folder), max_new_tokens=8)
    report = run_pipeline(work_dir=tmp_path / "run", source=corpus, per_task=1, rounds=1,
                          turn_teachers=[spec, TraceTeacherSpec()], workers=2)
    examples = read(report.examples)
    assert len(examples) == 4 and report.teacher_usage["turn_1"]["requests"] == 4
    assert all(e["turns"] == 2 and e["status"] == "correct" for e in examples)  # 8 random tokens: never right
