"""GRPO prompt sources: the pipeline's TFRecord shards and CRUXEval's samples."""

import json
import re

import pytest

from codeio_jax.data import tfrecords
from codeio_jax.data.shards import EXAMPLES, ShardSet, write_local
from codeio_jax.records import INPUT_PREDICTION, OUTPUT_PREDICTION
from codeio_jax.rl.benchmark_prompts import cruxeval_prompts
from codeio_jax.rl.prompts import PromptError, RLPrompt, pipeline_prompts, shard_prompts
from codeio_jax.rl.rewards import Sample, check_terms, score
from tests.conftest import shared_data

SUM_CODE = "def main_solution(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n"


def rewards(prompts, replies, sandbox):
    return [s.reward for s in score([Sample(p, r, 100, "stop", 1024) for p, r in zip(prompts, replies)],
                                    sandbox, check_terms([]))]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    from codeio_jax.data.pipeline import run_pipeline

    work = tmp_path_factory.mktemp("pipeline") / "run"
    run_pipeline(work_dir=work, per_task=1, rounds=0, workers=2)
    return work


def test_the_shards_own_answers_earn_the_reward(pipeline_run, sandbox):
    """A real run's shards, answered by its trace teacher: every example is a prompt
    whose reference (its verified turn) earns reward 1, under the ids prompts.jsonl
    gives the same questions."""
    loaded = shard_prompts(pipeline_run)
    assert loaded.errors == () and {p.task for p in loaded.prompts} == {OUTPUT_PREDICTION, INPUT_PREDICTION}
    assert sorted(p.id for p in loaded.prompts) == sorted(p.id for p in pipeline_prompts(pipeline_run).prompts)
    assert all(p.reference and p.messages[0]["role"] == "system" for p in loaded.prompts)
    assert set(rewards(loaded.prompts, [p.reference for p in loaded.prompts], sandbox)) == {1.0}
    # The shards' folder, one file or a glob name the same examples; tasks and limit filter them.
    folder = pipeline_run / "tfrecords"
    assert shard_prompts(folder).prompts == loaded.prompts
    first, second = sorted(folder.glob(f"{EXAMPLES}.tfrecord-*"))[:2]
    both = shard_prompts(str(folder / f"{EXAMPLES}.tfrecord-0000[01]-of-*")).prompts
    assert both == shard_prompts(first).prompts + shard_prompts(second).prompts and len(both) < len(loaded)
    outputs = shard_prompts(pipeline_run, tasks=[OUTPUT_PREDICTION], limit=3).prompts
    assert len(outputs) == 3 and {p.task for p in outputs} == {OUTPUT_PREDICTION}


def example(**fields):
    """An assembled example (predictions.assemble_row) of SUM_CODE."""
    task = fields.get("task", OUTPUT_PREDICTION)
    pair = fields.pop("pair", 0)
    answer = '{"output": 45}' if task == OUTPUT_PREDICTION else '{"input": {"n": 10}}'
    row = {"id": f"sum:{task}:{pair}", "record_id": "sum", "task": task, "status": "correct", "turns": 1,
           "system": "", "prompt": "What does it return?", "turn_1": answer, "feedback_1": "Correct.",
           "turn_2": "", "feedback_2": "", "input": {"n": 10}, "output": 45, "refcode": SUM_CODE,
           "funcname": "main_solution"}
    return {**row, **fields}


def write_shards(folder, rows, count=2):
    write_local(rows, ShardSet(EXAMPLES, count, ("tfrecord",), str(folder)), str(folder / "scratch"))
    return folder


def test_examples_become_prompts_with_their_verified_turn(tmp_path, sandbox):
    revised = example(pair=1, status="correct", turns=2, turn_1='{"output": 44}', feedback_1="Incorrect.",
                      turn_2='I added one too many.\n{"output": 45}')
    rows = [example(system="Reason.", task=INPUT_PREDICTION), revised,
            example(pair=2, status="wrong", turn_1='{"output": 44}'),
            example(pair=3, status="correct", turns=3, turn_1="x", turn_2="y")]  # turn 3 is not in a shard
    loaded = shard_prompts(write_shards(tmp_path, rows))
    by_id = {p.id: p for p in loaded.prompts}
    assert loaded.errors == () and sorted(by_id) == ["sum/input_prediction/0", "sum/output_prediction/1",
                                                     "sum/output_prediction/2", "sum/output_prediction/3"]
    first = by_id["sum/input_prediction/0"]
    assert first == RLPrompt("sum/input_prediction/0", INPUT_PREDICTION, (
        {"role": "system", "content": "Reason."}, {"role": "user", "content": "What does it return?"}), 45,
        SUM_CODE, "main_solution", '{"input": {"n": 10}}')
    assert by_id["sum/output_prediction/1"].reference == revised["turn_2"]
    assert by_id["sum/output_prediction/2"].reference is None and by_id["sum/output_prediction/3"].reference is None
    assert rewards([first, by_id["sum/output_prediction/1"]], [first.reference, revised["turn_2"]],
                   sandbox) == [1.0, 1.0]


def test_rows_a_reward_cannot_use_are_error_rows(tmp_path):
    imported = example(id="imp_0123", record_id="", status="imported", output=None, refcode="", funcname="")
    rows = [example(), imported, example(pair=1, task=INPUT_PREDICTION, refcode=""),
            example(pair=2, prompt=""), example(id="sum:input_prediction:3"), example(pair=4, task="summary")]
    write_shards(tmp_path, rows, count=1)
    # Records written with other schemas: fields of an assembled example missing, or of another kind.
    shard = tmp_path / f"{EXAMPLES}.tfrecord-00000-of-00001"
    with open(shard, "ab") as f:
        f.write(tfrecords.frame(tfrecords.encode_example({"id": "x", "task": OUTPUT_PREDICTION},
                                                         {"id": "text", "task": "text"})))
        f.write(tfrecords.frame(tfrecords.encode_example({name: 1 for name in tfrecords.EXAMPLE_SCHEMA},
                                                         {name: "int" for name in tfrecords.EXAMPLE_SCHEMA})))
    loaded = shard_prompts(tmp_path)
    assert [p.id for p in loaded.prompts] == ["sum/output_prediction/0"]
    errors = sorted(row["error"].split(": ", 1)[1] for row in loaded.errors)
    assert len(errors) == 7 and all(row["error"].startswith(f"{shard} record ") for row in loaded.errors)
    assert [e.split(" ")[0] for e in errors] == ["an", "field", "field", "field", "no", "not", "not"]
    assert any("nothing to check an answer against" in e for e in errors)
    assert any("without `refcode`" in e for e in errors)
    assert any("`prompt` is empty" in e for e in errors)
    assert any("not `<record_id>:<task>:<pair index>`" in e for e in errors)
    assert any("`task` must be one of" in e for e in errors)
    assert any(e.startswith("not an assembled example (Example field `record_id`") for e in errors)
    assert {row["id"] for row in loaded.errors} == {None, "imp_0123", "sum:input_prediction:1",
                                                     "sum:output_prediction:2", "sum:input_prediction:3",
                                                     "sum:summary:4"}
    with pytest.raises(PromptError, match="no usable prompt for the tasks .'input_prediction'.; first problem"):
        shard_prompts(tmp_path, tasks=[INPUT_PREDICTION])


def test_a_damaged_or_incomplete_shard_set_is_an_error_naming_the_file(tmp_path):
    folder = write_shards(tmp_path / "shards", [example(pair=n) for n in range(6)])
    first, second = sorted(folder.glob(f"{EXAMPLES}.tfrecord-*"))
    data = second.read_bytes()
    second.write_bytes(data[:-3])  # torn: the last record is cut short
    with pytest.raises(PromptError, match=f"{re.escape(str(second))}: byte \\d+: truncated record.*this shard is "
                                          "damaged"):
        shard_prompts(folder)
    second.write_bytes(data[:20] + bytes([data[20] ^ 1]) + data[21:])  # one bit flipped
    with pytest.raises(PromptError, match=f"{re.escape(str(second))}: byte 0: data checksum mismatch"):
        shard_prompts(folder)
    second.unlink()  # a set with a shard missing would lose its examples without a word
    with pytest.raises(PromptError, match="do not make one whole set"):
        shard_prompts(folder)
    assert shard_prompts(first).prompts  # named on its own, a shard is read
    with pytest.raises(PromptError, match=f"no TFRecord shards in {re.escape(str(tmp_path))} .looked for "
                                          f"{EXAMPLES}.tfrecord-\\*"):
        shard_prompts(tmp_path)
    with pytest.raises(PromptError, match="does not exist"):
        shard_prompts(tmp_path / "absent")
    with pytest.raises(PromptError, match="no file matches"):
        shard_prompts(str(tmp_path / "absent-*"))


def test_cruxeval_prompts_in_its_format_and_filters():
    data = shared_data("cruxeval/cruxeval.jsonl")
    every = cruxeval_prompts(data)
    # sample_152's input is `''.join(['A'] * 20)`: not data, so its input prediction is an error row.
    assert len(every) == 800 + 800 - len(every.errors) and len(every.errors) == 12
    assert "sample_152/input_prediction/0" in {row["id"] for row in every.errors}
    picked = cruxeval_prompts(data, ids=["sample_3", "sample_0"])
    assert [p.id for p in picked.prompts] == ["sample_0/output_prediction/0", "sample_0/input_prediction/0",
                                              "sample_3/output_prediction/0", "sample_3/input_prediction/0"]
    out = picked.prompts[2]
    assert (out.scoring, out.refcode.startswith("def f(text, value)"), out.input, out.expected, out.funcname) == (
        "cruxeval", True, "'bcksrut', 'q'", "'bcksrutq'", "f")
    assert out.reference == "[ANSWER]assert f('bcksrut', 'q') == 'bcksrutq'[/ANSWER]"
    assert "assert f('bcksrut', 'q') == ??" in out.messages[-1]["content"]
    assert "assert f(??) == 'bcksrutq'" in picked.prompts[3].messages[-1]["content"]
    assert [p.id for p in cruxeval_prompts(data, tasks=[INPUT_PREDICTION], limit=2).prompts] == [
        "sample_0/input_prediction/0", "sample_1/input_prediction/0"]
    with pytest.raises(PromptError, match="does not hold: \\['sample_9999'\\]"):
        cruxeval_prompts(data, ids=["sample_0", "sample_9999"])
    with pytest.raises(PromptError, match="tasks must name some of"):
        cruxeval_prompts(data, tasks=["summary"])


def test_a_prompt_says_how_it_is_scored():
    with pytest.raises(PromptError, match="scoring must be one of \\['codeio', 'cruxeval'\\], got 'exact'"):
        RLPrompt("r/output_prediction/0", OUTPUT_PREDICTION, (), 45, scoring="exact")
    with pytest.raises(PromptError, match="are Python source text"):
        RLPrompt("sample_0/output_prediction/0", OUTPUT_PREDICTION, (), 45, "def f(x): return x", "f",
                 scoring="cruxeval", input="45")


def test_a_missing_or_malformed_cruxeval_file_is_an_error(tmp_path):
    with pytest.raises(PromptError, match="absent.jsonl does not exist"):
        cruxeval_prompts(tmp_path / "absent.jsonl")
    path = tmp_path / "cruxeval.jsonl"
    good = {"id": "sample_0", "code": "def f(x):\n    return x", "input": "1", "output": "1"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"id": "sample_1", "code": "def f(): pass"}) + "\n")
    with pytest.raises(PromptError, match="cruxeval.jsonl line 2: not a CRUXEval sample"):
        cruxeval_prompts(path)
    path.write_text(json.dumps(good) + "\n{\n")
    with pytest.raises(PromptError, match="line 2"):
        cruxeval_prompts(path)
