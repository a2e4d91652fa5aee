"""Rewards by execution: the verifier's verdict, plus configurable terms.

A prompt's `scoring` says how its completions are verified:
- "codeio": as the pipeline verifies a teacher's reply (verify/verdicts.py):
  output prediction by the tolerant comparison with the recorded output; input
  prediction by running the predicted input through the record's code in the
  hardened sandbox, every input prediction of a batch submitted at once so the
  sandbox's slots run them in parallel;
- "cruxeval": by CRUXEval's official rule (verify/cruxeval.py): the generation
  read from the reply's [ANSWER] assertion is checked by running the sample's
  code and `assert <output> == <generation>`, every check of the batch
  submitted at once; "passed" is correct, a generation CRUXEval drops is
  no_answer, any other outcome wrong. Stricter than the official rule, which
  executes any expression (`f(*[1, 1])`, `x or True`, `__import__('os')...`):
  a generation that is not data (output prediction: a literal; input
  prediction: `f(<literal arguments>)`) is no_answer and never executed.
Either way nothing a completion says is executed: an answer is read as data
(JSON or a Python literal), and only the record's or sample's own code runs,
on that data.

The reward is the sum of the terms (each a callable `term(sample, verdict) ->
float` with a `name`), gin-configurable:
- `Verified(weight)`: `weight` for a correct answer, 0 otherwise (always on);
- `FormatReward(weight)`: `weight` for a reply whose answer could be read;
- `LengthPenalty(buffer_tokens, weight)`: DAPO's soft overlong penalty, 0 up to
  `buffer_tokens` before the budget, then falling linearly to -weight at it; a
  completion cut off by the budget gets -weight.
Every score carries the verdict's status. A term that raises (or a verdict that
cannot be computed) gives the sample an `error`, never a silent zero: the
trainer leaves its group out of the update and writes the error down.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import gin

from codeio_jax.records import INPUT_PREDICTION, OUTPUT_PREDICTION
from codeio_jax.rl.prompts import CRUXEVAL, RLPrompt
from codeio_jax.verify import cruxeval
from codeio_jax.verify.batching import data_only_key
from codeio_jax.verify.cruxeval_prompts import generation_from_reply
from codeio_jax.verify.verdicts import (CORRECT, INVALID_INPUT, NO_ANSWER, WRONG, InputPrediction, Verdict,
                                        verify_input_predictions, verify_output_prediction)

CRUXEVAL_MODES = {OUTPUT_PREDICTION: "output", INPUT_PREDICTION: "input"}
_DATA_ONLY = {"output": "a literal (constants, and lists, tuples, sets and dicts of them)",
              "input": "a call f(<literal arguments>)"}
_SHOWN_CHARS = 300  # of a generation quoted in feedback


@dataclasses.dataclass(frozen=True)
class Sample:
    """One completion of one prompt, as the reward sees it."""

    prompt: RLPrompt
    text: str
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class Score:
    reward: float
    parts: dict[str, float]
    status: str  # the verdict's status ("correct", "wrong", "no_answer", ...), or "error"
    error: str | None = None


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Verified:
    """The answer verified by execution: `weight` when correct."""

    weight: float = 1.0
    name: str = "correct"

    def __call__(self, sample: Sample, verdict: Verdict) -> float:
        return self.weight if verdict.correct else 0.0


@gin.configurable
@dataclasses.dataclass(frozen=True)
class FormatReward:
    """`weight` when an answer could be read from the reply (right or wrong)."""

    weight: float = 0.1
    name: str = "format"

    def __call__(self, sample: Sample, verdict: Verdict) -> float:
        return 0.0 if verdict.status in (NO_ANSWER, INVALID_INPUT) else self.weight


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LengthPenalty:
    """0 until `buffer_tokens` before the token budget, then down linearly to
    -weight at the budget; a completion the budget cut off gets -weight."""

    buffer_tokens: int = 64
    weight: float = 0.5
    name: str = "length"

    def __call__(self, sample: Sample, verdict: Verdict) -> float:
        if sample.finish_reason == "length":
            return -self.weight
        start = sample.max_new_tokens - self.buffer_tokens
        if sample.completion_tokens <= start:
            return 0.0
        return -self.weight * (sample.completion_tokens - start) / max(self.buffer_tokens, 1)


RewardTerm = Callable[[Sample, Verdict], float]


def check_terms(terms: Sequence[Any]) -> tuple[RewardTerm, ...]:
    """The terms, each callable with a distinct name; Verified is added if missing."""
    terms = tuple(terms)
    for term in terms:
        if not callable(term) or not isinstance(getattr(term, "name", None), str):
            raise ValueError(f"a reward term must be callable as term(sample, verdict) and have a `name`; got "
                             f"{term!r}")
    names = [term.name for term in terms]
    if len(set(names)) != len(names):
        raise ValueError(f"reward terms need distinct names, got {names}")
    if not any(isinstance(term, Verified) for term in terms):
        terms = (Verified(),) + terms
    return terms


def verdicts(samples: Sequence[Sample], sandbox) -> list[Verdict | str]:
    """The verdict of each sample, or the reason it has none. The input
    predictions run in the sandbox all submitted before any is awaited, then
    the CRUXEval checks likewise."""
    out: list[Verdict | str | None] = [None] * len(samples)
    inputs, benchmark = [], []
    for index, sample in enumerate(samples):
        prompt = sample.prompt
        if prompt.scoring == CRUXEVAL:
            benchmark.append((index, sample))
        elif prompt.task == INPUT_PREDICTION:
            inputs.append((index, InputPrediction(sample.text, prompt.refcode, prompt.expected, prompt.funcname)))
        else:
            out[index] = verify_output_prediction(sample.text, prompt.expected)
    if inputs:
        try:
            judged = verify_input_predictions([item for _, item in inputs], sandbox)
        except Exception as exc:  # the sandbox itself failed: every input prediction lacks a verdict
            judged = [f"the sandbox failed: {type(exc).__name__}: {exc}"] * len(inputs)
        for (index, _), verdict in zip(inputs, judged):
            out[index] = verdict
    for (index, _), verdict in zip(benchmark, cruxeval_verdicts([sample for _, sample in benchmark], sandbox)):
        out[index] = verdict
    return out  # type: ignore[return-value]


def refused_generation(mode: str, sample: cruxeval.Sample, generation: str) -> str | None:
    """Why the RL reward will not execute `generation` for `sample`, or None:
    the check must be data beside the sample's code, parsed as it will run
    (so a generation that adds a statement or an assert message is refused)."""
    if data_only_key(cruxeval.assert_line(sample, generation), mode) is None:
        return f"not {_DATA_ONLY[mode]}, which is all the reward executes"
    return None


def cruxeval_verdicts(samples: Sequence[Sample], sandbox) -> list[Verdict | str]:
    """CRUXEval's verdict on each completion, or the reason it has none: every
    data-only generation of the batch scored at once, per mode (cruxeval.score
    runs them in batches, each distinct program once)."""
    out: list[Verdict | str | None] = [None] * len(samples)
    # mode -> benchmark sample -> [(index, generation)]; a prompt's fields make its
    # sample, so prompts that agree on them share one and their copies run once.
    pending: dict[str, dict[cruxeval.Sample, list[tuple[int, str]]]] = {}
    for index, sample in enumerate(samples):
        prompt, mode = sample.prompt, CRUXEVAL_MODES[sample.prompt.task]
        benchmark = cruxeval.Sample(prompt.record_id, prompt.refcode, prompt.input, prompt.expected)
        generation = generation_from_reply(mode, sample.text)
        refused = refused_generation(mode, benchmark, generation)
        if refused:
            out[index] = Verdict(prompt.task, NO_ANSWER, predicted=generation, expected=prompt.expected,
                                 feedback=f"The answer is {refused}. End the reply with "
                                          f"[ANSWER]assert f(...) == ...[/ANSWER].")
        else:
            pending.setdefault(mode, {}).setdefault(benchmark, []).append((index, generation))
    for mode, groups in pending.items():
        keys = {f"{benchmark.id}#{number}": (benchmark, entries)
                for number, (benchmark, entries) in enumerate(groups.items())}
        try:
            report = cruxeval.score({key: [g for _, g in entries] for key, (_, entries) in keys.items()}, mode,
                                    {key: benchmark for key, (benchmark, _) in keys.items()}, sandbox)
        except Exception as exc:  # the sandbox itself failed: none of these checks has a verdict
            for _, entries in keys.values():
                for index, _ in entries:
                    out[index] = f"the sandbox failed: {type(exc).__name__}: {exc}"
            continue
        for key, (benchmark, entries) in keys.items():
            for (index, generation), status, message in zip(entries, report.statuses[key], report.messages[key]):
                out[index] = _cruxeval_verdict(samples[index].prompt.task, benchmark, generation, status, message)
    return out  # type: ignore[return-value]


def _cruxeval_verdict(task: str, benchmark: cruxeval.Sample, generation: str, status: str,
                      message: str) -> Verdict:
    if status == "passed":
        return Verdict(task, CORRECT, predicted=generation, expected=benchmark.output, execution=status,
                       feedback=f"Correct: `{cruxeval.assert_line(benchmark, generation)}` holds.")
    if status == "skipped":
        return Verdict(task, NO_ANSWER, predicted=generation, expected=benchmark.output, execution=status,
                       feedback=f"No answer: {message}.")
    shown = generation if len(generation) <= _SHOWN_CHARS else generation[:_SHOWN_CHARS] + "..."
    what = "does not hold" if status == "failed" else f"ended with {status}" + (f": {message}" if message else "")
    return Verdict(task, WRONG, predicted=generation, expected=benchmark.output, execution=status,
                   feedback=f"Incorrect: the assertion with {shown} {what}.")


def score(samples: Sequence[Sample], sandbox, terms: Sequence[RewardTerm]) -> list[Score]:
    """Each sample's reward: the sum of the terms on its verdict."""
    scores = []
    for sample, verdict in zip(samples, verdicts(samples, sandbox)):
        if isinstance(verdict, str):
            scores.append(Score(0.0, {}, "error", verdict))
            continue
        parts: dict[str, float] = {}
        error = None
        for term in terms:
            try:
                value = float(term(sample, verdict))
            except Exception as exc:
                error = f"reward term `{term.name}` raised {type(exc).__name__}: {exc}"
                break
            if value != value or value in (float("inf"), float("-inf")):
                error = f"reward term `{term.name}` gave {value}"
                break
            parts[term.name] = value
        if error:
            scores.append(Score(0.0, parts, "error", error))
        else:
            scores.append(Score(sum(parts.values()), parts, verdict.status))
    return scores
