"""Rewards by execution: what earns reward and what never does (hostile completions),
for the pipeline's prompts and for CRUXEval's."""

import json

import pytest

from codeio_jax.records import INPUT_PREDICTION, OUTPUT_PREDICTION
from codeio_jax.rl.benchmark_prompts import cruxeval_prompts
from codeio_jax.rl.prompts import RLPrompt
from codeio_jax.rl.rewards import FormatReward, LengthPenalty, Sample, Verified, check_terms, score
from codeio_jax.rl.toy import one_line_functions
from tests.conftest import shared_data

SUM_CODE = "def main_solution(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n"


def output_prompt(expected=45):
    return RLPrompt("r/output_prediction/0", OUTPUT_PREDICTION, ({"role": "user", "content": "?"},), expected,
                    SUM_CODE)


def input_prompt(expected=45):
    return RLPrompt("r/input_prediction/0", INPUT_PREDICTION, ({"role": "user", "content": "?"},), expected,
                    SUM_CODE)


def sample(prompt, text, tokens=10, finish="stop", budget=64):
    return Sample(prompt, text, tokens, finish, budget)


def test_a_right_answer_earns_the_reward_and_a_wrong_one_nothing(sandbox):
    scores = score([sample(output_prompt(), 'The loop adds 0..9.\n{"output": 45}'),
                    sample(output_prompt(), '{"output": 46}'),
                    sample(input_prompt(), 'n must be 10: {"input": {"n": 10}}'),
                    sample(input_prompt(), '{"input": {"n": 9}}')], sandbox, check_terms([]))
    assert [(s.reward, s.status) for s in scores] == [(1.0, "correct"), (0.0, "wrong"), (1.0, "correct"),
                                                      (0.0, "wrong")]
    assert all(s.parts == {"correct": s.reward} for s in scores)


def test_an_input_is_re_executed_not_compared_with_the_sampled_one(sandbox):
    # Any input the code maps to the target is right: n=10 is the recorded one, but a
    # prompt whose target is 0 accepts both n=0 and n=1.
    scores = score([sample(input_prompt(0), '{"input": {"n": 0}}'), sample(input_prompt(0), '{"input": {"n": 1}}')],
                   sandbox, check_terms([]))
    assert [s.reward for s in scores] == [1.0, 1.0]


def test_the_toy_teacher_is_right_as_often_as_asked_and_the_reward_finds_which(sandbox):
    # The warm-up's references (rl/toy.py): a teacher right 60% of the time names
    # a wrong digit otherwise, which the verifier, not the reference, must catch.
    taught = one_line_functions(400, seed=3, arguments=3, teacher_accuracy=0.6).prompts
    scores = score([sample(p, p.reference) for p in taught], sandbox, check_terms([]))
    assert {s.status for s in scores} == {"correct", "wrong"}
    assert abs(sum(s.reward for s in scores) / len(scores) - 0.6) < 0.08  # 400 draws: one sd is 0.025
    for task in (OUTPUT_PREDICTION, INPUT_PREDICTION):  # both tasks carry mistakes
        assert 0.4 < sum(s.reward for s, p in zip(scores, taught) if p.task == task) / 200 < 0.8
    exact = one_line_functions(100, seed=3, arguments=3).prompts
    assert all(s.reward == 1.0 for s in score([sample(p, p.reference) for p in exact], sandbox, check_terms([])))


HOSTILE = [
    # answers that are code: read as data or not at all, never run
    (OUTPUT_PREDICTION, '{"output": __import__("os").getpid()}', "no_answer"),
    (OUTPUT_PREDICTION, "```python\nprint(45)\n```", "no_answer"),
    (INPUT_PREDICTION, '{"input": {"n": __import__("sys").exit(0)}}', "no_answer"),
    (INPUT_PREDICTION, '{"input": "main_solution(10)"}', "invalid_input"),
    # data that tries to break out of the call the verifier writes around it
    (INPUT_PREDICTION, json.dumps({"input": {"n": "10); import os; os._exit(0); ("}}), "execution_error"),
    (INPUT_PREDICTION, json.dumps({"input": {"n": 10, "__import__": "os"}}), "execution_error"),
    # an input that makes the record's own code run away: the sandbox's limit, no reward
    (INPUT_PREDICTION, '{"input": {"n": 1000000000000}}', "execution_error"),
    # huge answers
    (OUTPUT_PREDICTION, "x" * 1_000_000, "no_answer"),
    (OUTPUT_PREDICTION, json.dumps({"output": list(range(200_000))}), "wrong"),
    (OUTPUT_PREDICTION, '{"output": ' + "[" * 100_000 + "]" * 100_000 + "}", "no_answer"),
    # hedging: only the last answer counts
    (OUTPUT_PREDICTION, '{"output": 45} or maybe {"output": 44}', "wrong"),
]


@pytest.mark.parametrize("task, text, status", HOSTILE, ids=[f"{t[:5]}-{i}" for i, (t, _, _) in enumerate(HOSTILE)])
def test_no_hostile_completion_earns_reward(sandbox, task, text, status):
    prompt = output_prompt() if task == OUTPUT_PREDICTION else input_prompt()
    [scored] = score([sample(prompt, text)], sandbox, check_terms([FormatReward(0.0), LengthPenalty(8, 0.0)]))
    assert (scored.reward, scored.status, scored.error) == (0.0, status, None)
    # The sandbox is still whole afterwards: a right answer is still rewarded.
    [after] = score([sample(input_prompt(), '{"input": {"n": 10}}')], sandbox, check_terms([]))
    assert after.reward == 1.0


def test_format_and_length_terms(sandbox):
    terms = check_terms([FormatReward(0.1), LengthPenalty(buffer_tokens=10, weight=0.5)])
    scores = score([sample(output_prompt(), '{"output": 46}', tokens=20, budget=64),
                    sample(output_prompt(), 'no idea', tokens=59, budget=64),
                    sample(output_prompt(), '{"output": 45}', tokens=64, finish="length", budget=64)],
                   sandbox, terms)
    assert [s.parts for s in scores] == [{"correct": 0.0, "format": 0.1, "length": 0.0},
                                         {"correct": 0.0, "format": 0.0, "length": -0.25},
                                         {"correct": 1.0, "format": 0.1, "length": -0.5}]
    assert scores[2].reward == pytest.approx(0.6)


def test_a_term_that_raises_is_an_error_not_a_zero(sandbox):
    class Broken:
        name = "broken"

        def __call__(self, sample, verdict):
            raise KeyError("missing")

    class NotANumber:
        name = "nan"

        def __call__(self, sample, verdict):
            return float("nan")

    [raised] = score([sample(output_prompt(), '{"output": 45}')], sandbox, check_terms([Broken()]))
    assert raised.status == "error" and "reward term `broken` raised KeyError" in raised.error
    [nan] = score([sample(output_prompt(), '{"output": 45}')], sandbox, check_terms([NotANumber()]))
    assert nan.status == "error" and "gave nan" in nan.error


def test_terms_are_checked():
    assert isinstance(check_terms([])[0], Verified)
    with pytest.raises(ValueError, match="distinct names"):
        check_terms([FormatReward(), FormatReward()])
    with pytest.raises(ValueError, match="must be callable"):
        check_terms(["correct"])


def cruxeval_prompt(task):
    """CRUXEval's sample_3: f('bcksrut', 'q') == 'bcksrutq'."""
    out, inp = cruxeval_prompts(shared_data("cruxeval/cruxeval.jsonl"), ids=["sample_3"]).prompts
    return out if task == OUTPUT_PREDICTION else inp


def answer(assertion):
    return f"Step by step...\n[ANSWER]{assertion}[/ANSWER]"


CALL = "assert f('bcksrut', 'q') == "
HOSTILE_CRUXEVAL = [
    # code where data belongs: never executed (CRUXEval's own rule would run each)
    (OUTPUT_PREDICTION, answer(CALL + "__import__('os')._exit(0)"), "no_answer"),
    (OUTPUT_PREDICTION, answer(CALL + "'x' or True"), "no_answer"),
    (OUTPUT_PREDICTION, "'x' or True", "no_answer"),
    (OUTPUT_PREDICTION, answer(CALL + "f('bcksrut', 'q')"), "no_answer"),
    (OUTPUT_PREDICTION, answer(CALL + "'bcksrutq'; import os; os._exit(0)"), "no_answer"),
    (INPUT_PREDICTION, answer("assert f(*['bcksrut', 'q']) == 'bcksrutq'"), "no_answer"),
    (INPUT_PREDICTION, answer("assert f(**{'text': 'bcksrut', 'value': 'q'}) == 'bcksrutq'"), "no_answer"),
    (INPUT_PREDICTION, answer("assert f(__import__('os')._exit(0)) == 'bcksrutq'"), "no_answer"),
    (INPUT_PREDICTION, answer("assert f('a', 'b') or True == 'bcksrutq'"), "no_answer"),
    (INPUT_PREDICTION, answer("assert f(lambda: 'bcksrutq') == 'bcksrutq'"), "no_answer"),
    # data, but CRUXEval drops an output prediction that repeats the call
    (OUTPUT_PREDICTION, answer(CALL + "\"f('bcksrut', 'q')\""), "no_answer"),
    # huge answers: data is run and wrong; past the parser's limits, no answer
    (OUTPUT_PREDICTION, answer(CALL + repr("x" * 1_000_000)), "wrong"),
    (OUTPUT_PREDICTION, answer(CALL + "[" * 100_000 + "]" * 100_000), "no_answer"),
    (OUTPUT_PREDICTION, answer(CALL + "1+" * 100_000 + "1"), "no_answer"),
    (OUTPUT_PREDICTION, answer(CALL + "-" * 1_000_000 + "1"), "no_answer"),
    (OUTPUT_PREDICTION, "x" * 1_000_000, "no_answer"),
    # hedging: only the last answer counts
    (OUTPUT_PREDICTION, answer(CALL + "'bcksrutq'") + " or " + answer(CALL + "'bcksrut'"), "wrong"),
]


@pytest.mark.parametrize("task, text, status", HOSTILE_CRUXEVAL,
                         ids=[f"{t[:5]}-{i}" for i, (t, _, _) in enumerate(HOSTILE_CRUXEVAL)])
def test_no_hostile_cruxeval_completion_earns_reward(sandbox, task, text, status):
    [scored] = score([sample(cruxeval_prompt(task), text)], sandbox,
                     check_terms([FormatReward(0.0), LengthPenalty(8, 0.0)]))
    assert (scored.reward, scored.status, scored.error) == (0.0, status, None)
    [after] = score([sample(cruxeval_prompt(INPUT_PREDICTION), answer("assert f('bcks', 'rutq') == 'x'"))],
                    sandbox, check_terms([]))
    assert after.reward == 1.0  # any input that gives the output is right, and the sandbox is whole


def test_every_cruxeval_reference_earns_the_reward(sandbox):
    """All 800 samples, both tasks, scored by CRUXEval's rule in one batch. The 12
    input predictions whose own input is not data (a lambda, `range(100, 120)`)
    are error rows of the prompt source, not prompts no answer could win."""
    loaded = cruxeval_prompts(shared_data("cruxeval/cruxeval.jsonl"))
    assert len(loaded) == 1588 and all("is not a call f(<literal arguments>)" in row["error"]
                                       and row["id"].endswith("/input_prediction/0") for row in loaded.errors)
    scores = score([sample(p, f"The call gives it.\n{p.reference}") for p in loaded.prompts], sandbox,
                   check_terms([FormatReward(0.1)]))
    assert all(s.status == "correct" and s.reward == pytest.approx(1.1) for s in scores)
