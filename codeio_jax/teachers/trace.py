"""The trace teacher: offline, deterministic chains of thought from execution.

Unlike a model behind an API it needs the record and the pair behind a prompt,
so it answers our own prediction prompts (data/prompts.py): it runs the
record's code on the pair's input under a tracer in the sandbox
(trace_capture.py) and writes the explanation from what happened
(trace_render.py). Every answer ends in the exact JSON the verifier expects.
"""

from __future__ import annotations

from typing import Sequence

from codeio_jax.execution import Limits, Sandbox
from codeio_jax.records import OUTPUT_PREDICTION, Prompt, UnifiedRecord
from codeio_jax.teachers.base import Reply, Usage
from codeio_jax.teachers.trace_capture import code_map, parse_trace, trace_check
from codeio_jax.teachers.trace_render import MAX_CHARS, explain_input, explain_output, explain_revision


class TraceTeacher:
    def __init__(self, sandbox: Sandbox, limits: Limits | None = None, max_chars: int = MAX_CHARS):
        self.sandbox = sandbox
        self.limits = limits or Limits(timeout_s=20.0)
        self.max_chars = max_chars
        self.usage = Usage()

    def answer(self, records: dict[str, UnifiedRecord], prompts: Sequence[Prompt],
               feedback: Sequence[str | None] | None = None) -> list[Reply]:
        """One reply per prompt; with feedback, the revision turn for it."""
        feedback = list(feedback) if feedback is not None else [None] * len(prompts)
        maps = {rid: code_map(records[rid].refcode) for rid in {p.record_id for p in prompts}}
        futures = [self.sandbox.submit(trace_check(records[p.record_id], p.input, self.limits,
                                                   lines=maps[p.record_id]))
                   for p in prompts]
        replies = []
        for prompt, note, future in zip(prompts, feedback, futures):
            record = records[prompt.record_id]
            outcome = future.result()
            if not outcome.passed:
                self.usage.add(failed=1)
                replies.append(Reply(error=f"tracing failed: {outcome.status}: {outcome.message}"))
                continue
            trace = parse_trace(outcome.value)
            loops = maps[prompt.record_id]["loops"]
            if note is not None:
                text = explain_revision(record, prompt.input, trace, loops, prompt.task, note, self.max_chars)
            elif prompt.task == OUTPUT_PREDICTION:
                text = explain_output(record, prompt.input, trace, loops, self.max_chars)
            else:
                text = explain_input(record, prompt.input, trace, loops, self.max_chars)
            self.usage.add(requests=1)
            replies.append(Reply(text=text, finish_reason="stop"))
        return replies
