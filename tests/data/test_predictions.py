"""The per-row prediction stages: prompts, turns, verification, assembly, import."""

import json

import pytest

from codeio_jax.data import predictions, stages
from codeio_jax.data.ios import DEFAULT_CORPUS
from codeio_jax.records import RecordError
from codeio_jax.teachers.base import Reply


def corpus_rows(n=3):
    return [json.loads(line) for line in DEFAULT_CORPUS.read_text().splitlines()[:n]]


def with_pairs(row):
    # The embedded records carry no pairs; give the first one three by hand.
    return {**row, "ios": [{"input": {"x": i}, "output": i * 2} for i in range(3)]}


def test_prompt_rows_carry_what_later_stages_need():
    row = with_pairs(corpus_rows(1)[0])
    rows = predictions.prompt_rows(row, seed=0, per_task=2)
    assert [r["task"] for r in rows] == ["output_prediction"] * 2 + ["input_prediction"] * 2
    assert len({r["id"] for r in rows}) == 4
    for r in rows:
        assert predictions.check_row(r) is None
        assert r["record"]["refcode"] == row["refcode"] and r["turns"] == []
        assert r["output"] == r["input"]["x"] * 2
    assert predictions.prompt_rows(row, seed=0, per_task=2) == rows  # seeded: same bytes
    assert predictions.prompt_rows(row, seed=0, per_task=0) == []


def test_a_record_without_pairs_is_refused_with_its_id():
    row = corpus_rows(1)[0]
    with pytest.raises(RecordError, match=row["id"]):
        predictions.prompt_rows(row)


def turn_row():
    row = predictions.prompt_rows(with_pairs(corpus_rows(1)[0]), per_task=1)[0]
    return row


def test_turns_follow_the_verdicts(sandbox):
    row = turn_row()
    assert predictions.wants_turn(row, 1) and not predictions.wants_turn(row, 2)
    answered = predictions.with_reply(row, Reply(text='so {"output": -1}'), "student")
    [wrong] = predictions.verify_rows([answered], sandbox)
    assert wrong["turns"][0]["verdict"]["status"] == "wrong"
    assert predictions.wants_turn(wrong, 2) and not predictions.wants_turn(wrong, 1)
    chat = predictions.conversation(wrong)
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[2]["content"] == 'so {"output": -1}'
    assert wrong["turns"][0]["verdict"]["feedback"] in chat[3]["content"]
    right = predictions.with_reply(wrong, Reply(text=json.dumps({"output": row["output"]})), "trace")
    [right] = predictions.verify_rows([right], sandbox)
    assert right["turns"][1]["verdict"]["correct"] and not predictions.wants_turn(right, 3)
    # Verifying again changes nothing: every turn already has its verdict.
    assert predictions.verify_rows([right], sandbox) == [right]


def test_assembled_rows_have_the_released_shape(sandbox):
    row = turn_row()
    once = predictions.verify_rows([predictions.with_reply(row, Reply(text="no idea"), "s")], sandbox)[0]
    example = predictions.assemble_row(once)
    assert {"prompt", "turn_1", "feedback_1", "turn_2", "feedback_2"} <= example.keys()
    assert example["turn_1"] == "no idea" and example["turn_2"] == "" and example["feedback_2"] == ""
    assert example["status"] == "no_answer" and example["turns"] == 1
    assert example["prompt"] == row["messages"][1]["content"]
    assert example["system"] == row["messages"][0]["content"]
    assert example["input"] == row["input"] and example["output"] == row["output"]


def test_check_row_names_the_broken_field():
    row = turn_row()
    assert "record" in predictions.check_row({**row, "record": {"refcode": "x"}})
    assert "task" in predictions.check_row({**row, "task": "guess"})
    assert "turn 1" in predictions.check_row({**row, "turns": [{"reply": None}]})
    assert predictions.check_row([1]) == "expected a JSON object"


RELEASED = {"prompt": 'You are given ... in the following json format: {"output": <your output>}',
            "turn_1": "reasoning ... {\"output\": 3}", "feedback_1": "", "turn_2": None, "feedback_2": None}


def test_import_keeps_released_rows_unchanged(tmp_path):
    source = tmp_path / "released.jsonl"
    input_row = {**RELEASED, "prompt": 'Can you predict a feasible input ... {"input": <your input>}',
                 "turn_2": "again", "feedback_2": "ok", "extra": 7}
    lines = [json.dumps(RELEASED), "not json", json.dumps({"prompt": 3, "turn_1": "x"}),
             json.dumps(input_row), json.dumps({**RELEASED, "prompt": "what?"})]
    source.write_text("\n".join(lines) + "\n")
    summary = stages.import_file(source, tmp_path / "ex.jsonl", tmp_path / "ex.errors.jsonl")
    assert (summary.items, summary.ok, summary.errors) == (5, 2, 3)
    out = [json.loads(line) for line in (tmp_path / "ex.jsonl").read_text().splitlines()]
    assert out[0]["prompt"] == RELEASED["prompt"] and out[0]["turn_1"] == RELEASED["turn_1"]
    assert out[0]["task"] == "output_prediction" and out[0]["turns"] == 1 and out[0]["turn_2"] == ""
    assert out[1]["task"] == "input_prediction" and out[1]["turns"] == 2 and out[1]["extra"] == 7
    assert out[0]["id"] != out[1]["id"] and out[0]["status"] == "imported"
    errors = [json.loads(line) for line in (tmp_path / "ex.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [2, 3, 5]
    assert "not valid JSON" in errors[0]["error"] and "`prompt`" in errors[1]["error"]
    assert "neither an output nor an input" in errors[2]["error"]
