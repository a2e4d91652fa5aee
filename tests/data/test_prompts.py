"""Prompts and the transform-reply parser."""

import json

import pytest

from codeio_jax.data import ios
from codeio_jax.data.prompts import (
    TransformParseError, parse_transform_reply, prediction_prompts, revision_messages, transform_messages,
)
from codeio_jax.records import INPUT_PREDICTION, OUTPUT_PREDICTION, UnifiedRecord, read_unified
from codeio_jax.verify.verdicts import verify_output_prediction


@pytest.fixture(scope="module")
def corpus():
    return {r.id: r for r in read_unified(ios.DEFAULT_CORPUS)}


def reply_for(record: UnifiedRecord, heading="### {}") -> str:
    """A teacher's reply to the transform prompt, as a model would write it."""
    return "\n".join([
        "Sure. Here is the exercise.", "",
        heading.format("Main function"), "```python", record.refcode.strip(), "```", "",
        heading.format("Input/output description"), record.io_requirements, "",
        heading.format("Input generator"), "Some prose first.", "```python", record.input_generator.strip(), "```",
        "", heading.format("Problem statement"), record.problem_description, "",
    ])


def test_transform_prompt_carries_the_code():
    messages = transform_messages("def f(x):\n    return x + 1\n")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "def f(x):" in messages[1]["content"] and "### Input generator" in messages[1]["content"]


@pytest.mark.parametrize("heading", ["### {}", "## {}:", "**{}**", "{}:"])
def test_parse_transform_reply(corpus, heading):
    record = corpus["coin_change_min_coins"]
    fields = parse_transform_reply(reply_for(record, heading))
    assert fields["refcode"].strip() == record.refcode.strip()
    assert fields["input_generator"].strip() == record.input_generator.strip()
    assert fields["io_requirements"] == record.io_requirements.strip()
    assert fields["problem_description"] == record.problem_description.strip()


def test_parsed_reply_runs_through_the_ios_stage(corpus, sandbox, recheck):
    parsed = parse_transform_reply(reply_for(corpus["josephus_survivor"]))
    record = UnifiedRecord.from_dict({**parsed, "id": "from_teacher"})
    (result,) = ios.generate(ios.numbered([record]), sandbox, ios.IOSettings(timeout_s=5.0), recheck=recheck)
    assert result.error is None and len(result.row["ios"]) == 10


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.replace("### Problem statement", "### Summary"), "no problem statement section"),
    (lambda r: r.replace("def main_solution", "def solve"), "does not define `main_solution`"),
    (lambda r: r.replace("def input_generator():", "def input_generator(:"), "input generator does not parse"),
    (lambda r: r.replace("import random", "import random\nrandom.seed(1)"), "seeds `random` itself"),
    (lambda r: r.replace("```python", "").replace("```", ""), "no ```python code block"),
])
def test_parse_transform_reply_says_what_is_wrong(corpus, mutate, message):
    with pytest.raises(TransformParseError, match=message):
        parse_transform_reply(mutate(reply_for(corpus["coin_change_min_coins"])))


def test_prediction_prompts(corpus, sandbox, recheck):
    source = corpus["run_length_encoding"]
    (result,) = ios.generate(ios.numbered([source]), sandbox, ios.IOSettings(timeout_s=5.0), recheck=recheck)
    record = UnifiedRecord.from_dict(result.row)
    prompts = prediction_prompts(record, seed=0)
    assert [p.task for p in prompts] == [OUTPUT_PREDICTION] * 3 + [INPUT_PREDICTION] * 3
    assert prompts == prediction_prompts(record, seed=0)
    assert [p.pair_index for p in prompts] != [p.pair_index for p in prediction_prompts(record, seed=1)]
    for prompt in prompts:
        question = prompt.messages[-1]["content"]
        assert record.problem_description.strip() in question and "def main_solution" in question
        if prompt.task == OUTPUT_PREDICTION:
            assert json.dumps(prompt.input, ensure_ascii=False) in question and '{"output": <value>}' in question
        else:
            assert json.dumps(prompt.output, ensure_ascii=False) in question and '"input"' in question
    # The recorded answer to an output prompt verifies as correct.
    first = prompts[0]
    assert verify_output_prediction(json.dumps({"output": first.output}), first.output).correct


def test_fewer_pairs_give_fewer_prompts(corpus):
    record = UnifiedRecord.from_dict({**corpus["coin_change_min_coins"].to_dict(),
                                      "ios": [{"input": {"coins": [1], "amount": 2}, "output": 2}]})
    assert len(prediction_prompts(record)) == 2
    assert len(prediction_prompts(record, per_task=0)) == 0


def test_revision_turn():
    first = [{"role": "user", "content": "What is 2 + 2?"}]
    turn = revision_messages(first, 'It is {"output": 5}', "Incorrect: the code does not return 5.")
    assert [m["role"] for m in turn] == ["user", "assistant", "user"]
    assert turn[2]["content"].startswith("Incorrect: the code does not return 5.")
