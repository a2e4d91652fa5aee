"""The trace teacher on the embedded corpus: every answer verifies."""

import pytest

from codeio_jax.data import ios
from codeio_jax.data.prompts import prediction_prompts
from codeio_jax.records import OUTPUT_PREDICTION, UnifiedRecord, read_unified
from codeio_jax.teachers.trace import TraceTeacher
from codeio_jax.verify.verdicts import InputPrediction, verify_input_predictions, verify_output_prediction


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
    assert all(r.ok for r in replies)
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
    reverse = by_id[("coin_change_min_coins", "input_prediction")]
    assert reverse.startswith("The target output is") and "candidate input" in reverse


def test_revision_turn_takes_up_the_feedback(corpus, answered, sandbox):
    prompts, _, _ = answered
    prompt = prompts[0]
    (reply,) = TraceTeacher(sandbox).answer(corpus, [prompt], feedback=["Incorrect: not 3."])
    assert reply.text.startswith("The feedback says my answer was wrong")
    assert verify_output_prediction(reply.text, prompt.output).correct
