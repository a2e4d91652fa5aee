"""`ast.parse` that is safe to call from threads.

CPython 3.11 keeps the parser's recursion bookkeeping in interpreter-wide state,
so two threads parsing at once (stage chunks on `run_stage`'s threads, DoFns on
the DirectRunner's) can fail with "AST constructor recursion depth mismatch".
Every parse in the package goes through this lock; it costs nothing in one thread.
"""

from __future__ import annotations

import ast
import threading

_PARSING = threading.Lock()


def parse(code: str) -> ast.Module:
    """ast.parse(code) under the package's one parse lock; raises what ast.parse raises."""
    with _PARSING:
        return ast.parse(code)
