"""What goes into the sandbox and what comes out: limits, checks, outcomes."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

PASSED = "passed"
FAILED = "failed"
TIMEOUT = "timeout"
MEMORY = "memory"
SKIPPED = "skipped"
ERROR_PREFIX = "error:"
CRASHED_PREFIX = "crashed:"

# Modules a slot imports once, before forking, as soon as a check imports them,
# instead of every such child paying for the import. An allowlist: a module
# imported into the slot itself must have no side effects beyond loading.
ON_DEMAND_MODULES = (
    "numpy", "scipy", "pandas", "sympy", "sklearn", "nltk", "unittest", "queue", "enum",
    "dataclasses", "statistics", "fractions", "decimal",
)
_IMPORT_RE = re.compile(r"^\s*(?:import|from)\s+([A-Za-z_][\w]*)", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-check resource limits. Every field is a hard limit enforced by the kernel
    (rlimits) or by the slot (wall clock, capped output)."""

    timeout_s: float = 3.0
    memory_mb: int = 2048
    file_mb: int = 16
    open_files: int = 64
    processes: int = 64
    output_bytes: int = 16384
    result_bytes: int = 1 << 20
    message_chars: int = 1000

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"Limits.{field.name} must be positive, got {value!r}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Check:
    """One program to run.

    source: the whole program, run as `__main__` in a fresh namespace.
    entry: a function the program defines; when given, it is called with no
      arguments after the program ran, and its JSON-serializable return value is
      the outcome's `value`.
    assert_line: the 1-based line of the program's top-level `assert` that states
      the check; an AssertionError raised exactly there is `failed` (the program
      ran, the answer is wrong), anywhere else it is an error.
    limits: overrides the sandbox's default limits for this check.
    prelude: code run first, in the same namespace: harness code that many checks
      share. Each slot compiles a prelude once, before forking, so checks that
      share it do not pay for compiling it.
    """

    source: str
    entry: str | None = None
    assert_line: int | None = None
    limits: Limits | None = None
    prelude: str | None = None

    def needs(self) -> list[str]:
        imported = set(_IMPORT_RE.findall(self.source + "\n" + (self.prelude or "")))
        return [name for name in ON_DEMAND_MODULES if name in imported]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The single result of one check."""

    status: str
    value: Any = None
    message: str = ""
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def skipped(reason: str) -> Outcome:
    return Outcome(status=SKIPPED, message=reason)
