"""Who answers a turn: a chat teacher (any model behind the Teacher protocol)
or the trace teacher, behind one interface over prediction rows.

A chat teacher sees the conversation so far (data/predictions.py:conversation),
the way a model would. The trace teacher needs the record and the pair behind
the question, which every prediction row carries; on a revision turn it takes
up the feedback of the turn before. Which one answers each turn is the
pipeline's choice (gin), so a first turn may come from any model and the
revision from the trace teacher, or the other way round.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from codeio_jax.data.predictions import as_prompt, as_record, conversation
from codeio_jax.teachers.base import Reply, Teacher, Usage
from codeio_jax.teachers.trace import TraceTeacher


class Responder(Protocol):
    name: str
    usage: Usage
    batch_size: int  # rows handed over at once: enough to keep every request slot busy

    def reply(self, rows: Sequence[dict]) -> list[Reply]:
        """One reply per prediction row, answering its next turn."""

    def __enter__(self) -> "Responder": ...

    def __exit__(self, *exc) -> None:
        """Release what the teacher holds (threads, connections)."""


class _Closing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        close = getattr(self.teacher, "close", None)
        if close:
            close()


class ChatResponder(_Closing):
    def __init__(self, teacher: Teacher, name: str, batch_size: int = 64):
        self.teacher = teacher
        self.name = name
        self.batch_size = batch_size
        self.usage = getattr(teacher, "usage", Usage())

    def reply(self, rows: Sequence[dict]) -> list[Reply]:
        return self.teacher.reply([conversation(row) for row in rows])


class TraceResponder(_Closing):
    name = "trace"
    batch_size = 64

    def __init__(self, teacher: TraceTeacher):
        self.teacher = teacher
        self.usage = teacher.usage

    def reply(self, rows: Sequence[dict]) -> list[Reply]:
        records = {row["record_id"]: as_record(row) for row in rows}
        feedback = [row["turns"][-1]["verdict"]["feedback"] if row["turns"] else None for row in rows]
        return self.teacher.answer(records, [as_prompt(row) for row in rows], feedback)
