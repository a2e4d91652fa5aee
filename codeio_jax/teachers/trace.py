"""The trace teacher: offline, deterministic chains of thought from execution.

Unlike a model behind an API it needs the record and the pair behind a prompt,
so it answers our own prediction prompts (data/prompts.py): it runs the
record's code on the pair's input under a tracer in the sandbox
(trace_capture.py) and writes the explanation from what happened
(trace_render.py). Every answer ends in the exact JSON the verifier expects.

A record whose tracing fails fails once: the first prompt of each record not
yet seen goes ahead alone, and when it fails the record's other prompts (in
this batch and in later ones) fail at once with its reason instead of each
waiting out the same timeout.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from codeio_jax.execution import Check, Limits, Sandbox
from codeio_jax.records import INPUT_PREDICTION, OUTPUT_PREDICTION, Prompt, UnifiedRecord
from codeio_jax.teachers.base import Reply, Usage
from codeio_jax.teachers.trace_capture import COUNTED_EVENTS, DETAIL_EVENTS, code_map, parse_trace, trace_check
from codeio_jax.teachers.trace_render import MAX_CHARS, Try, explain_input, explain_output, explain_revision
from codeio_jax.verify.compare import first_mismatch
from codeio_jax.verify.verdicts import call_program

MAX_GUESS_CHARS = 400  # a guess longer than this as JSON would swamp the reply


class TraceTeacher:
    def __init__(self, sandbox: Sandbox, limits: Limits | None = None, max_chars: int = MAX_CHARS,
                 detail_events: int = DETAIL_EVENTS, counted_events: int = COUNTED_EVENTS):
        self.sandbox = sandbox
        self.limits = limits or Limits(timeout_s=20.0)
        self.max_chars = max_chars
        self.budgets = {"max_events": detail_events, "counted_events": counted_events}
        self.usage = Usage()
        self._failed: dict[str, str] = {}  # record id -> why its tracing failed
        self._traced: set[str] = set()  # records with a trace that worked

    def answer(self, records: dict[str, UnifiedRecord], prompts: Sequence[Prompt],
               feedback: Sequence[str | None] | None = None) -> list[Reply]:
        """One reply per prompt; with feedback, the revision turn for it."""
        feedback = list(feedback) if feedback is not None else [None] * len(prompts)
        maps = {rid: code_map(records[rid].refcode) for rid in {p.record_id for p in prompts}}
        replies: list[Reply | None] = [None] * len(prompts)
        # Wave 1: every prompt of a record already known, and the first of each
        # new one; wave 2: the others of the new records that traced.
        first, rest, leading = [], [], set()  # leading: records with a prompt in wave 1
        for index, prompt in enumerate(prompts):
            rid = prompt.record_id
            if rid in self._traced or rid in self._failed or rid not in leading:
                first.append(index)
                leading.add(rid)
            else:
                rest.append(index)
        traces: dict = {}  # (record, input) -> its trace: an output and an input prompt often share a pair
        for wave in (first, rest):
            pending = [(index, *self._submit(records[prompts[index].record_id], prompts[index],
                                             maps[prompts[index].record_id], traces))
                       for index in wave if prompts[index].record_id not in self._failed]
            for index, trace_future, tries in pending:
                prompt = prompts[index]
                outcome = trace_future.result()
                if not outcome.passed:
                    self._failed.setdefault(prompt.record_id, f"tracing failed: {outcome.status}: {outcome.message}")
                    continue
                self._traced.add(prompt.record_id)
                try:
                    replies[index] = self._reply(records[prompt.record_id], prompt, feedback[index],
                                                 parse_trace(outcome.value, prompt.output), maps[prompt.record_id],
                                                 tries)
                except Exception as exc:  # a value the renderer cannot word: this prompt's error, not the stage's
                    self.usage.add(failed=1)
                    replies[index] = Reply(error=f"the trace teacher could not write the reply: "
                                                 f"{type(exc).__name__}: {exc}"[:500])
            for index in wave:
                if replies[index] is None:
                    self.usage.add(failed=1)
                    replies[index] = Reply(error=self._failed[prompts[index].record_id])
        return replies

    def _submit(self, record: UnifiedRecord, prompt: Prompt, lines: dict, traces: dict):
        key = (record.id, _json_text(prompt.input))
        trace = traces.get(key)
        if trace is None:
            trace = traces[key] = self.sandbox.submit(trace_check(record, prompt.input, self.limits, lines=lines,
                                                                  **self.budgets))
        tries = []
        if prompt.task == INPUT_PREDICTION:
            for attempt in guesses(record, prompt):
                future = None
                if attempt.how == "edit":
                    future = self.sandbox.submit(Check(call_program(record.refcode, record.funcname, attempt.input),
                                                       entry="__codeio_call__", limits=self.limits))
                tries.append((attempt, future))
        return trace, tries

    def _reply(self, record: UnifiedRecord, prompt: Prompt, note: str | None, trace, lines: dict, tries) -> Reply:
        loops = lines["loops"]
        if prompt.task == OUTPUT_PREDICTION:
            text = (explain_revision(record, prompt.input, trace, loops, prompt.task, note, self.max_chars)
                    if note is not None else explain_output(record, prompt.input, trace, loops, self.max_chars))
        else:
            ran = [_ran(attempt, future) for attempt, future in tries]
            # An edit that happens to reach the target would be an answer of its own;
            # the reply keeps to tries that miss.
            ran = [attempt for attempt in ran if attempt.error or first_mismatch(attempt.output, trace.output)]
            args = (record, prompt.input, trace, loops)
            text = (explain_revision(*args, prompt.task, note, self.max_chars, ran, lines["returns"])
                    if note is not None else explain_input(*args, self.max_chars, ran, lines["returns"]))
        self.usage.add(requests=1)
        return Reply(text=text, finish_reason="stop")


def guesses(record: UnifiedRecord, prompt: Prompt) -> list[Try]:
    """Inputs to try before the answer: another pair the input generator made
    (its output known from the ios stage), then that guess with one argument
    changed to the answer's (run when the reply is written), when at least two differ."""
    target = prompt.output
    for pair in record.ios:
        if pair.input == prompt.input or first_mismatch(pair.output, target) is None:
            continue
        if len(_json_text(pair.input)) > MAX_GUESS_CHARS:
            continue
        guess = Try(pair.input, pair.output)
        differing = sorted(k for k in prompt.input if pair.input.get(k) != prompt.input[k])
        if set(pair.input) != set(prompt.input) or len(differing) < 2:
            return [guess]
        edited = {**pair.input, differing[0]: prompt.input[differing[0]]}
        return [guess, Try(edited, how="edit", changed=differing[0])]
    return []


def _ran(attempt: Try, future) -> Try:
    if future is None:
        return attempt
    outcome = future.result()
    if outcome.passed:
        return Try(attempt.input, outcome.value, how=attempt.how, changed=attempt.changed)
    reason = outcome.status if outcome.status in ("timeout", "memory") else outcome.status.removeprefix("error:")
    return Try(attempt.input, error=reason, how=attempt.how, changed=attempt.changed)


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
