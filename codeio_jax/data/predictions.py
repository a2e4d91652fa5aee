"""The prediction stages, one pure function per row: prompts, respond, verify, assemble.

A prediction row is one question about one pair of one record, with everything
the later stages need, and the turns so far:

    {"id": "<record id>:<task>:<pair index>", "record_id", "task", "pair_index",
     "messages": [system, user], "input", "output",
     "record": {"problem_description", "io_requirements", "refcode", "funcname",
                "ios": a few small pairs of the record, the trace teacher's guesses},
     "turns": [{"teacher", "reply", "finish_reason", "verdict": {...}}, ...]}

Turn 1 answers the prompt. Each revision round (CodeI/O++) is another `respond`
and `verify` over the same rows: a row whose last turn was verified wrong gets
the verifier's feedback as a new user turn and answers again; a row already
correct passes through unchanged. So "revise" is `respond` + `verify` at turn
k > 1, and the first turn's failures are exactly what it works on.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from codeio_jax.data.prompts import prediction_prompts, revision_messages
from codeio_jax.execution import Limits, Sandbox
from codeio_jax.records import INPUT_PREDICTION, OUTPUT_PREDICTION, IOPair, Prompt, RecordError, UnifiedRecord
from codeio_jax.teachers.base import Reply
from codeio_jax.verify.verdicts import (InputPrediction, Verdict, verify_input_predictions,
                                        verify_output_prediction)

RECORD_FIELDS = ("problem_description", "io_requirements", "refcode", "funcname")


def prompt_rows(record_row: Any, seed: int = 0, per_task: int = 3) -> list[dict]:
    """The `prompts` stage: a record with pairs in, its prediction rows out.
    Raises RecordError for a record that cannot be used."""
    record = UnifiedRecord.from_dict(record_row)
    if not record.ios:
        raise RecordError(f"record {record.id}: it has no I/O pairs (run the ios stage first)")
    context = {name: getattr(record, name) for name in RECORD_FIELDS}
    context["ios"] = _guess_pairs(record)
    return [_row(record.id, prompt, context) for prompt in prediction_prompts(record, seed, per_task)]


GUESS_PAIRS = 4  # a record's pairs a row carries, small ones only: the trace teacher's first guesses
GUESS_PAIR_CHARS = 1000


def _guess_pairs(record: UnifiedRecord) -> list[dict]:
    """What the trace teacher may try before an input prediction's answer
    (teachers/trace.py); never shown to a model."""
    small = []
    for pair in map(IOPair.to_dict, record.ios):
        if len(json.dumps(pair, ensure_ascii=False)) <= GUESS_PAIR_CHARS:
            small.append(pair)
        if len(small) == GUESS_PAIRS:
            break
    return small


def _row(record_id: str, prompt: Prompt, context: dict) -> dict:
    return {"id": f"{record_id}:{prompt.task}:{prompt.pair_index}", "record_id": record_id,
            "task": prompt.task, "pair_index": prompt.pair_index, "messages": list(prompt.messages),
            "input": prompt.input, "output": prompt.output, "record": context, "turns": []}


def check_row(row: Any) -> str | None:
    """What is wrong with a prediction row, or None."""
    if not isinstance(row, dict):
        return "expected a JSON object"
    for name, kind in (("id", str), ("record_id", str), ("task", str), ("messages", list),
                       ("input", dict), ("record", dict), ("turns", list)):
        if not isinstance(row.get(name), kind):
            return f"field `{name}` ({kind.__name__}) is missing or has the wrong type"
    if row["task"] not in (OUTPUT_PREDICTION, INPUT_PREDICTION):
        return f"field `task` must be {OUTPUT_PREDICTION!r} or {INPUT_PREDICTION!r}, got {row['task']!r}"
    if "output" not in row:
        return "field `output` is missing"
    missing = [name for name in RECORD_FIELDS if not isinstance(row["record"].get(name), str)]
    if missing:
        return f"field `record` lacks {', '.join(missing)}"
    for index, turn in enumerate(row["turns"], start=1):
        if not isinstance(turn, dict) or not isinstance(turn.get("reply"), str):
            return f"turn {index} has no reply"
    return None


def wants_turn(row: dict, turn: int) -> bool:
    """Whether `respond` at `turn` has work on this row: turn 1 when it has no
    answer yet; a later turn when the one before it was verified wrong."""
    turns = row["turns"]
    if len(turns) != turn - 1:
        return False
    return turn == 1 or not turns[-1].get("verdict", {}).get("correct", False)


def conversation(row: dict) -> list[dict]:
    """The chat so far: the prompt, then each answer followed by its feedback."""
    messages = list(row["messages"])
    for turn in row["turns"]:
        messages = revision_messages(messages, turn["reply"], turn["verdict"]["feedback"])
    return messages


def with_reply(row: dict, reply: Reply, teacher: str) -> dict:
    turn = {"teacher": teacher, "reply": reply.text, "finish_reason": reply.finish_reason}
    return {**row, "turns": [*row["turns"], turn]}


def as_prompt(row: dict) -> Prompt:
    return Prompt(row["record_id"], row["task"], row["pair_index"], tuple(row["messages"]),
                  row["input"], row["output"])


def as_record(row: dict) -> UnifiedRecord:
    context = row["record"]
    pairs = tuple(IOPair(pair["input"], pair["output"]) for pair in context.get("ios", ())
                  if isinstance(pair, dict) and isinstance(pair.get("input"), dict) and "output" in pair)
    return UnifiedRecord(id=row["record_id"], ios=pairs, **{name: context[name] for name in RECORD_FIELDS})


def verify_rows(rows: Sequence[dict], sandbox: Sandbox, reveal_expected: bool = False,
                timeout_s: float = 20.0) -> list[dict]:
    """The `verify` stage: a verdict on the last turn of each row that has an
    unverified one (input predictions run in parallel on the sandbox, each
    with `timeout_s`: the time the ios stage gave the record's own pairs, so a
    right answer to a slow record is not a timeout on a busy machine)."""
    verdicts: list[Verdict | None] = [None] * len(rows)
    inputs = []
    for index, row in enumerate(rows):
        if not row["turns"] or "verdict" in row["turns"][-1]:
            continue
        reply = row["turns"][-1]["reply"]
        if row["task"] == OUTPUT_PREDICTION:
            verdicts[index] = verify_output_prediction(reply, row["output"], reveal_expected)
        else:
            # The row's input is its ios pair's, deterministic: an answer equal to it needs no run.
            inputs.append((index, InputPrediction(reply, row["record"]["refcode"], row["output"],
                                                  row["record"]["funcname"], known_input=row["input"])))
    for (index, _), verdict in zip(inputs, verify_input_predictions([item for _, item in inputs], sandbox,
                                                                          Limits(timeout_s=timeout_s))):
        verdicts[index] = verdict
    out = []
    for row, verdict in zip(rows, verdicts):
        if verdict is None:
            out.append(row)
        else:
            last = {**row["turns"][-1], "verdict": verdict.to_dict()}
            out.append({**row, "turns": [*row["turns"][:-1], last]})
    return out


def final_status(row: dict) -> str:
    if not row["turns"]:
        return "unanswered"
    return row["turns"][-1].get("verdict", {}).get("status", "unverified")


def assemble_row(row: dict) -> dict:
    """The `assemble` stage: the released CodeIO-PyEdu-Reasoning shape (`prompt`,
    `turn_1`, `feedback_1`, `turn_2`, `feedback_2`; empty strings for a turn that
    did not happen, more pairs with more rounds) plus what training and
    verification need."""
    system = next((m["content"] for m in row["messages"] if m["role"] == "system"), "")
    prompt = next(m["content"] for m in row["messages"] if m["role"] == "user")
    example = {"id": row["id"], "record_id": row["record_id"], "task": row["task"],
               "status": final_status(row), "turns": len(row["turns"]), "system": system,
               "prompt": prompt}
    for index in range(1, max(2, len(row["turns"])) + 1):
        turn = row["turns"][index - 1] if index <= len(row["turns"]) else {}
        example[f"turn_{index}"] = turn.get("reply", "")
        example[f"feedback_{index}"] = turn.get("verdict", {}).get("feedback", "")
    example.update(input=row["input"], output=row["output"], refcode=row["record"]["refcode"],
                   funcname=row["record"]["funcname"])
    return example
