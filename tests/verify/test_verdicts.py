from codeio_jax.verify.verdicts import (
    CORRECT, EXECUTION_ERROR, INVALID_INPUT, KNOWN, NO_ANSWER, WRONG, InputPrediction,
    verify_input_predictions, verify_output_prediction,
)

REFCODE = """
def main_solution(coins, amount):
    best = [0] + [float("inf")] * amount
    for value in range(1, amount + 1):
        for coin in coins:
            if coin <= value:
                best[value] = min(best[value], best[value - coin] + 1)
    return best[amount] if best[amount] != float("inf") else -1
"""


def test_output_prediction_verdicts():
    right = verify_output_prediction('so {"output": 3.14159}', 3.1416)
    assert right.status == CORRECT and "Correct" in right.feedback
    wrong = verify_output_prediction('{"output": [1, 2]}', [1, 3])
    assert wrong.status == WRONG and "[1, 2]" in wrong.feedback and "[1, 3]" not in wrong.feedback
    revealed = verify_output_prediction('{"output": [1, 2]}', [1, 3], reveal_expected=True)
    assert "expected 3" in revealed.feedback
    missing = verify_output_prediction("I am not sure.", 5)
    assert missing.status == NO_ANSWER and '{"output"' in missing.feedback


def test_input_prediction_runs_the_code(sandbox):
    items = [
        InputPrediction('{"input": {"coins": [1, 2, 5], "amount": 11}}', REFCODE, 3),
        InputPrediction('{"input": {"coins": [2], "amount": 3}}', REFCODE, 3),
        InputPrediction('{"input": {"coins": [1], "amount": "x"}}', REFCODE, 3),
        InputPrediction('{"input": [1, 2]}', REFCODE, 3),
        InputPrediction("no idea", REFCODE, 3),
        InputPrediction('{"input": {"coins": [1], "amount": 1, "bogus": 1}}', REFCODE, 3),
    ]
    verdicts = verify_input_predictions(items, sandbox)
    assert [v.status for v in verdicts] == [CORRECT, WRONG, EXECUTION_ERROR, INVALID_INPUT,
                                            NO_ANSWER, EXECUTION_ERROR]
    assert verdicts[0].actual == 3
    assert "returns -1, not the target output 3" in verdicts[1].feedback
    assert "TypeError" in verdicts[2].feedback
    assert "bogus" in verdicts[5].feedback


def test_input_prediction_hostile_prediction_is_contained(sandbox):
    refcode = "def main_solution(n):\n    while n:\n        pass\n    return 0\n"
    verdict = verify_input_predictions([InputPrediction('{"input": {"n": 1}}', refcode, 0)], sandbox)[0]
    assert verdict.status == EXECUTION_ERROR and verdict.execution == "timeout"
    assert "did not finish" in verdict.feedback


def test_the_known_input_is_correct_without_a_run_and_any_other_runs(sandbox):
    # Code that cannot return: a verdict of CORRECT proves it was not run.
    refcode = "def main_solution(n):\n    raise RuntimeError('ran')\n"
    known = {"n": 1}
    items = [InputPrediction('{"input": {"n": 1}}', refcode, 7, known_input=known),
             InputPrediction('{"input": {"n": 1.0}}', refcode, 7, known_input=known),  # another JSON value
             InputPrediction('{"input": {"n": true}}', refcode, 7, known_input=known),
             InputPrediction('{"input": {"n": 1}}', refcode, 7)]  # no known input: run
    verdicts = verify_input_predictions(items, sandbox)
    assert verdicts[0].status == CORRECT and verdicts[0].execution == KNOWN and verdicts[0].actual == 7
    assert "returns 7, the target output" in verdicts[0].feedback
    for verdict in verdicts[1:]:
        assert verdict.status == EXECUTION_ERROR and "RuntimeError" in verdict.feedback
