"""The trace teacher on the embedded corpus and the authors' records: every
answer verifies, input prediction reasons backwards before its answer, long
runs cost a bounded trace, and a record that cannot be traced fails once."""

import json
import time

import pytest

from codeio_jax.data import ios
from codeio_jax.data.prompts import prediction_prompts
from codeio_jax.execution import Limits
from codeio_jax.records import INPUT_PREDICTION, OUTPUT_PREDICTION, IOPair, UnifiedRecord, read_unified
from codeio_jax.teachers.trace import TraceTeacher
from codeio_jax.verify.verdicts import InputPrediction, verify_input_predictions, verify_output_prediction
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def corpus(sandbox, recheck):
    records = list(read_unified(ios.DEFAULT_CORPUS))
    results = ios.generate(ios.numbered(records), sandbox, ios.IOSettings(timeout_s=10.0), recheck=recheck)
    return {r.record_id: UnifiedRecord.from_dict(r.row) for r in results}


@pytest.fixture(scope="module")
def answered(corpus, sandbox):
    prompts = [p for record in corpus.values() for p in prediction_prompts(record, per_task=1)]
    teacher = TraceTeacher(sandbox)
    return prompts, teacher.answer(corpus, prompts), teacher


def test_every_answer_on_the_corpus_verifies(corpus, answered, sandbox):
    prompts, replies, _ = answered
    assert len(prompts) == 2 * len(corpus) == 116
    assert_every_answer_verifies(corpus, prompts, replies, sandbox)


def assert_every_answer_verifies(corpus, prompts, replies, sandbox):
    assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
    outputs = [verify_output_prediction(r.text, p.output) for p, r in zip(prompts, replies)
               if p.task == OUTPUT_PREDICTION]
    inputs = verify_input_predictions(
        [InputPrediction(r.text, corpus[p.record_id].refcode, p.output) for p, r in zip(prompts, replies)
         if p.task != OUTPUT_PREDICTION], sandbox)
    assert all(v.correct for v in outputs + inputs)


def test_answers_are_deterministic_and_capped(corpus, answered, sandbox):
    prompts, replies, _ = answered
    again = TraceTeacher(sandbox).answer(corpus, prompts[:20])
    assert [r.text for r in again] == [r.text for r in replies[:20]]
    assert max(len(r.text) for r in replies) <= 6000
    short = TraceTeacher(sandbox, max_chars=1200).answer(corpus, prompts[:20])
    assert max(len(r.text) for r in short) <= 1200


def test_explanations_follow_the_execution(corpus, answered):
    prompts, replies, _ = answered
    by_id = {(p.record_id, p.task): r.text for p, r in zip(prompts, replies)}
    coin = by_id[("coin_change_min_coins", OUTPUT_PREDICTION)]
    assert "It calls `fewest_coins`" in coin and "The loop `for total in range(1, amount + 1)` runs" in coin
    assert "Pass 1:" in coin and coin.rstrip().endswith("```")
    reverse = by_id[("coin_change_min_coins", INPUT_PREDICTION)]
    assert reverse.startswith("The target output is") and "work backwards" in reverse
    assert "ends with `return fewest_coins(denominations, amount)`, so `fewest_coins` must return" in reverse


def assert_reasons_backwards(prompts, replies):
    """The final input appears only after a reasoned step back from the output,
    and, where the record has another pair to guess from, after a missed try."""
    tried = 0
    for prompt, reply in zip(prompts, replies):
        if prompt.task != INPUT_PREDICTION:
            continue
        text = reply.text
        first = text.find(json.dumps(prompt.input, ensure_ascii=False))
        step = max(text.find("must end as"), text.find("must return"), text.find("must come to"),
                   text.find("must lead the code there"))
        assert 0 < step < first, text
        if "guess, an input of the kind the input generator makes" in text:
            tried += 1
            assert text.find("guess") < first and "is not it" not in text[first:]
    return tried


def test_input_prediction_reasons_backwards_and_values_read_well(answered):
    prompts, replies, _ = answered
    assert assert_reasons_backwards(prompts, replies) >= 50  # of 58: records with a pair to guess from
    for reply in replies:
        assert "<__main__." not in reply.text and " object at 0x" not in reply.text
        if "the output is " in reply.text:
            after = reply.text.split("the output is ", 1)[1]
            assert not after[:1].isupper() or after[1:2].isupper(), after[:40]


LONG_RUN = """
def main_solution(n):
    total = 0
    for i in range(n):
        total += i % 7
    return total
"""


def sum_mod_7(n):
    return n // 7 * 21 + sum(range(n % 7))


def record_of(code, inputs, outputs, rid):
    return UnifiedRecord(id=rid, problem_description="Sum.", io_requirements="`return` (int): The sum.",
                         refcode=code, ios=tuple(IOPair(i, o) for i, o in zip(inputs, outputs)))


def test_a_long_run_costs_a_bounded_trace_and_still_verifies(sandbox):
    n = 3_000_000
    record = record_of(LONG_RUN, [{"n": n}, {"n": 10}], [sum_mod_7(n), 21], "long")
    prompts = [p for p in prediction_prompts(record, per_task=2) if p.input == {"n": n}]
    assert {p.task for p in prompts} == {OUTPUT_PREDICTION, INPUT_PREDICTION}
    started = time.perf_counter()
    replies = TraceTeacher(sandbox, Limits(timeout_s=20.0)).answer({"long": record}, prompts)
    assert time.perf_counter() - started < 5.0  # untraced it runs in about 0.3 s; fully traced, well past 20
    for prompt, reply in zip(prompts, replies):
        assert reply.ok and "follow the steps only by counting them" in reply.text
        assert "at least" in reply.text and "(my step-by-step trace stops inside it)" in reply.text
        if prompt.task == OUTPUT_PREDICTION:
            assert verify_output_prediction(reply.text, prompt.output).correct


SWALLOWS_EVERYTHING = """
def main_solution(n):
    total = 0
    try:
        for i in range(n):
            total += i % 7
    except BaseException:  # would swallow the trace's stop and return a wrong value
        return -1
    return total
"""


@pytest.mark.parametrize("code", [LONG_RUN, SWALLOWS_EVERYTHING], ids=["plain", "catches BaseException"])
def test_a_call_past_the_counted_budget_stops_there_and_answers_the_recorded_output(sandbox, code):
    n = 300_000_000  # about 30 s untraced: past the time limit unless the trace stops the call
    record = record_of(code, [{"n": n}, {"n": 10}], [sum_mod_7(n), 21], "huge")
    prompts = [p for p in prediction_prompts(record, per_task=2) if p.input == {"n": n}]
    assert {p.task for p in prompts} == {OUTPUT_PREDICTION, INPUT_PREDICTION}
    started = time.perf_counter()
    replies = TraceTeacher(sandbox, Limits(timeout_s=10.0), counted_events=20_000).answer({"huge": record}, prompts)
    assert time.perf_counter() - started < 5.0
    for prompt, reply in zip(prompts, replies):
        assert reply.ok, reply.error
        if prompt.task == OUTPUT_PREDICTION:
            assert verify_output_prediction(reply.text, prompt.output).correct
            assert str(sum_mod_7(n)) in reply.text and "-1" not in reply.text


UNTRACEABLE = """
import sys, time

def main_solution(n):
    if sys.gettrace() is not None:  # traced: past the time limit, in a call no event budget stops
        time.sleep(60)
    return n
"""


def test_a_record_that_cannot_be_traced_fails_once(sandbox):
    record = record_of(UNTRACEABLE, [{"n": k} for k in range(4)], list(range(4)), "untraceable")
    prompts = prediction_prompts(record, per_task=2)
    teacher = TraceTeacher(sandbox, Limits(timeout_s=1.0))
    started = time.perf_counter()
    replies = teacher.answer({"untraceable": record}, prompts)
    assert len(replies) == 4 and not any(r.ok for r in replies)
    assert len({r.error for r in replies}) == 1 and "tracing failed: timeout" in replies[0].error
    assert time.perf_counter() - started < 2.5  # one timeout waited out, not four
    (again,) = teacher.answer({"untraceable": record}, prompts[:1])  # a later batch: at once
    assert again.error == replies[0].error


@pytest.mark.slow
def test_on_the_authors_records_every_answer_verifies_and_reasons_backwards(sandbox, recheck):
    records = list(read_unified(shared_data("codeio/rawcode_1k_parsed.jsonl")))[:40]
    results = ios.generate(ios.numbered(records), sandbox, ios.IOSettings(timeout_s=10.0), recheck=recheck)
    corpus = {r.record_id: UnifiedRecord.from_dict(r.row) for r in results if r.row is not None}
    assert len(corpus) >= 30
    prompts = [p for record in corpus.values() for p in prediction_prompts(record, per_task=1)]
    replies = TraceTeacher(sandbox).answer(corpus, prompts)
    assert_every_answer_verifies(corpus, prompts, replies, sandbox)
    assert assert_reasons_backwards(prompts, replies) >= len(corpus) // 2


def test_revision_turn_takes_up_the_feedback(corpus, answered, sandbox):
    prompts, _, _ = answered
    prompt = prompts[0]
    (reply,) = TraceTeacher(sandbox).answer(corpus, [prompt], feedback=["Incorrect: not 3."])
    assert reply.text.startswith("The feedback says my answer was wrong")
    assert verify_output_prediction(reply.text, prompt.output).correct
