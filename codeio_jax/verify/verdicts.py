"""Verdicts on predictions, with feedback a model can act on.

Output prediction: the answer extracted from the reply must match the recorded
output (compare.py). Input prediction: the extracted input is run through the
record's function in the sandbox, and what comes out must match the target.
The feedback text is what the CodeI/O++ revision turn shows the model.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from codeio_jax.execution import Check, Limits, Sandbox
from codeio_jax.records import INPUT_PREDICTION, OUTPUT_PREDICTION
from codeio_jax.verify.compare import first_mismatch, show
from codeio_jax.verify.extract import extract_answer

CORRECT = "correct"
WRONG = "wrong"
NO_ANSWER = "no_answer"
INVALID_INPUT = "invalid_input"
EXECUTION_ERROR = "execution_error"
# Verdict.execution of an input prediction that is the known input (not run again).
KNOWN = "known input"

_MESSAGE_LIMIT = 300


@dataclasses.dataclass(frozen=True)
class Verdict:
    task: str
    status: str
    predicted: Any = None
    actual: Any = None
    expected: Any = None
    feedback: str = ""
    execution: str | None = None  # the sandbox status, for input prediction

    @property
    def correct(self) -> bool:
        return self.status == CORRECT

    def to_dict(self) -> dict:
        return {"task": self.task, "status": self.status, "correct": self.correct,
                "predicted": self.predicted, "actual": self.actual, "expected": self.expected,
                "feedback": self.feedback, "execution": self.execution}


def verify_output_prediction(reply: str, expected: Any, reveal_expected: bool = False) -> Verdict:
    """reveal_expected: say in the feedback where the prediction differs from the
    recorded output. Off by default: a revision turn that is shown the answer
    learns to copy rather than to reason."""
    found = extract_answer(reply, "output")
    if found is None:
        return Verdict(OUTPUT_PREDICTION, NO_ANSWER, expected=expected, feedback=(
            'No answer could be read from the reply. End it with a JSON object of the '
            'form {"output": <value>}.'))
    mismatch = first_mismatch(found.value, expected)
    if mismatch is None:
        return Verdict(OUTPUT_PREDICTION, CORRECT, predicted=found.value, expected=expected,
                       feedback=f"Correct: the code returns {show(found.value)} for this input.")
    feedback = (f"Incorrect: the code does not return {show(found.value)} for this input. "
                "Trace the execution again step by step and check each intermediate value.")
    if reveal_expected:
        feedback += f" The first difference is {mismatch}."
    return Verdict(OUTPUT_PREDICTION, WRONG, predicted=found.value, expected=expected, feedback=feedback)


@dataclasses.dataclass(frozen=True)
class InputPrediction:
    """One input-prediction reply to verify against a record's code.

    known_input: an input whose output is `expected`, established by execution
    already (the pipeline's prompts carry the ios stage's pair, run in two worlds
    and found deterministic). A prediction that is that input, JSON for JSON
    (1 and 1.0, true and 1 differ), is correct without running the code again:
    the trace teacher's answers and many a model's are, and on real corpora the
    slowest records would otherwise run once more per prompt. Only for inputs
    the caller established itself, never for one read from a user's file."""

    reply: str
    refcode: str
    expected: Any
    funcname: str = "main_solution"
    known_input: dict | None = None


def verify_input_predictions(items: Sequence[InputPrediction], sandbox: Sandbox,
                             limits: Limits | None = None) -> list[Verdict]:
    """Run every extracted input through its code, in parallel on the sandbox."""
    pending = []
    verdicts: list[Verdict | None] = []
    for item in items:
        found = extract_answer(item.reply, "input")
        if found is None:
            verdicts.append(Verdict(INPUT_PREDICTION, NO_ANSWER, expected=item.expected, feedback=(
                'No answer could be read from the reply. End it with a JSON object of the form '
                '{"input": {<argument name>: <value>, ...}}.')))
        elif not isinstance(found.value, dict):
            verdicts.append(Verdict(INPUT_PREDICTION, INVALID_INPUT, predicted=found.value,
                                    expected=item.expected, feedback=(
                f"The predicted input must be a JSON object mapping each argument name to its "
                f"value; got {show(found.value)}.")))
        elif item.known_input is not None and _same_json(found.value, item.known_input):
            verdicts.append(_correct_input(item, found.value, item.expected, KNOWN))
        else:
            check = Check(call_program(item.refcode, item.funcname, found.value),
                          entry="__codeio_call__", limits=limits)
            pending.append((len(verdicts), item, found.value, sandbox.submit(check)))
            verdicts.append(None)
    for index, item, predicted, future in pending:
        verdicts[index] = _judge_run(item, predicted, future.result())
    return verdicts


def _correct_input(item: InputPrediction, predicted: dict, actual: Any, execution: str) -> Verdict:
    return Verdict(INPUT_PREDICTION, CORRECT, predicted=predicted, actual=actual, expected=item.expected,
                   execution=execution, feedback=(f"Correct: `{item.funcname}` with the input {show(predicted)} "
                                                  f"returns {show(actual)}, the target output."))


def _same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def call_program(refcode: str, funcname: str, kwargs: dict) -> str:
    """The record's code plus a function that calls it on `kwargs`."""
    payload = json.dumps(kwargs, ensure_ascii=False)
    return (f"{refcode}\n\n"
            f"def __codeio_call__():\n"
            f"    import json as _json\n"
            f"    return {funcname}(**_json.loads({payload!r}))\n")


def _judge_run(item: InputPrediction, predicted: dict, outcome) -> Verdict:
    shown = show(predicted)
    if not outcome.passed:
        if outcome.status == "timeout":
            what = "did not finish within the time limit"
        elif outcome.status == "memory":
            what = "ran out of memory"
        elif outcome.status.startswith("error:"):
            what = f"raised {outcome.status[6:]}: {outcome.message[:_MESSAGE_LIMIT]}"
        else:
            what = f"ended with {outcome.status}"
        return Verdict(INPUT_PREDICTION, EXECUTION_ERROR, predicted=predicted, expected=item.expected,
                       execution=outcome.status,
                       feedback=f"Running `{item.funcname}` with the predicted input {shown} {what}.")
    actual = outcome.value
    if first_mismatch(actual, item.expected) is None:
        return _correct_input(item, predicted, actual, outcome.status)
    return Verdict(INPUT_PREDICTION, WRONG, predicted=predicted, actual=actual, expected=item.expected,
                   execution=outcome.status, feedback=(
        f"Incorrect: `{item.funcname}` with the predicted input {shown} returns {show(actual)}, "
        f"not the target output {show(item.expected)}."))
