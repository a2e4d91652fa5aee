"""The Teacher protocol and what a teacher returns."""

from __future__ import annotations

import dataclasses
import threading
from typing import Protocol, Sequence

Message = dict[str, str]


@dataclasses.dataclass(frozen=True)
class Reply:
    """A teacher's answer to one conversation. `error` is set, and `text` empty,
    when no answer could be had; a failed reply never raises, so one bad request
    never stops a batch."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Teacher(Protocol):
    def reply(self, conversations: Sequence[Sequence[Message]]) -> list[Reply]:
        """One reply per conversation, in order."""


@dataclasses.dataclass
class Usage:
    """What a teacher has spent so far; safe to update from many threads."""

    requests: int = 0
    cached: int = 0
    failed: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
