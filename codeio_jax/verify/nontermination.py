"""Proving that a deterministic `while` loop never ends, instead of waiting 3 s.

CRUXEval gives each check 3 s, and a generation that sends `f` into an endless
loop costs every scorer those 3 s of a core. For the data-only checks of
batching.py (the benchmark's own self-contained code on literal data, nothing
else runs) we can often prove it sooner: if the same frame reaches the same
point of a `while` loop twice with the same state, the execution is periodic
and the check's outcome is `timeout`, exactly what waiting would give.

What makes the proof sound, and what is therefore required:
- The code is deterministic: no imports, no reflection (batching.py), no
  `print` (its output fills a capped file, which is state we do not see), no
  `id()`, no `is` except against None.
- The loop's condition is on one line and its body starts on a later one, and
  the loop is not inside a `for`, `with` or `try` in its function: at the moment
  the condition starts, the frame's value stack holds nothing we cannot see.
- The state is everything the frame can reach: its locals and the module's
  globals, walked as a graph that records aliasing, of types whose whole state
  is their value (None, bool, int, float, complex, str, bytes, range, tuple,
  list, dict, functions with their defaults and closures). Any other object
  (a set, whose iteration order hides in its table; an iterator; an instance)
  and the proof is not attempted. States past a size budget are not attempted.
- Same frame object, same instruction offset, same state: a recursive call that
  repeats its caller's state is a different frame, and is left to run into
  RecursionError as it would.

Snapshots are taken only on a timer tick (every 50 ms after the check has run
50 ms), for one loop header each, so a check that ends normally is not slowed.
"""

from __future__ import annotations

import ast

from codeio_jax import syntax

_NONDETERMINISTIC_NAMES = frozenset({"print", "id", "hash", "input"})
_ALLOWED_ANCESTORS = (ast.Module, ast.FunctionDef, ast.If, ast.While)


def watchable_loops(code: str) -> list[int]:
    """Line numbers of the `while` headers whose repetition proves an endless
    loop; empty when the code as a whole does not qualify."""
    try:
        tree = syntax.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in _NONDETERMINISTIC_NAMES:
            return []
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                if isinstance(op, (ast.Is, ast.IsNot)) and not any(
                        isinstance(side, ast.Constant) and side.value is None
                        for side in (operands[i], operands[i + 1])):
                    return []
        if isinstance(node, (ast.AsyncFunctionDef, ast.ClassDef, ast.Yield, ast.YieldFrom)):
            return []
    lines: list[int] = []
    _collect(tree, lines)
    return sorted(set(lines))


def _collect(node: ast.AST, lines: list[int]) -> None:
    """Walk statements, stopping under any construct that keeps hidden state on
    the value stack (for, with) or in the interpreter (try)."""
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, ast.stmt):
            continue
        if isinstance(child, ast.While):
            test = child.test
            if (test.lineno == test.end_lineno == child.lineno
                    and child.body[0].lineno > child.lineno and not child.orelse):
                lines.append(child.lineno)
        if isinstance(child, _ALLOWED_ANCESTORS):
            _collect(child, lines)


# Runs inside the sandboxed batch child, before the checks. `_Repeated` is raised
# into the looping frame once a state repeats; the batch runner reports the
# check as a timeout whatever the code does with the exception.
RUNTIME = '''
import sys as _sys
import types as _types


class _Repeated(BaseException):
    pass


class _GiveUp(Exception):
    pass


_FUNCTION = _types.FunctionType
_ATOMS = (type(None), bool, int, str, bytes)


def _snapshot(frame, budget=20000):
    """The frame's reachable state as a tuple, aliasing included."""
    out = []
    memo = {}
    keep = []
    left = [budget]

    def walk(obj):
        left[0] -= 1
        if left[0] < 0:
            raise _GiveUp()
        kind = type(obj)
        if kind in _ATOMS:
            out.append((kind.__name__, obj))
        elif kind is float:
            out.append(("f", obj.hex()))
        elif kind is complex:
            out.append(("c", obj.real.hex(), obj.imag.hex()))
        elif kind is range:
            out.append(("r", obj.start, obj.stop, obj.step))
        elif kind is tuple:
            out.append(("t", len(obj)))
            for item in obj:
                walk(item)
        elif kind in (list, dict, _FUNCTION) or kind.__name__ == "cell":
            seen = memo.get(id(obj))
            if seen is not None:
                out.append(("ref", seen))
                return
            memo[id(obj)] = len(memo)
            keep.append(obj)
            if kind is list:
                out.append(("l", len(obj)))
                for item in obj:
                    walk(item)
            elif kind is dict:
                out.append(("d", len(obj)))
                for key, value in obj.items():
                    walk(key)
                    walk(value)
            elif kind is _FUNCTION:
                out.append(("fn", id(obj.__code__)))
                walk(obj.__defaults__)
                walk(obj.__kwdefaults__)
                walk(obj.__closure__)
            else:
                try:
                    walk(obj.cell_contents)
                except ValueError:
                    out.append(("empty",))
        else:
            raise _GiveUp()

    try:
        for scope in (frame.f_locals, frame.f_globals):
            walk({k: v for k, v in scope.items() if not k.startswith("__")})
    except (_GiveUp, RecursionError):
        return None
    return tuple(out)


class _Watcher:
    """Arms a one-shot trace on each timer tick; raises _Repeated on a repeat."""

    def __init__(self, lines):
        self.lines = frozenset(lines)
        self.seen = {}
        self.armed = []
        self.repeated = False

    def arm(self, frame):
        while frame is not None:
            if frame.f_code.co_filename == "<item>":
                frame.f_trace = self.trace
                self.armed.append(frame)
            frame = frame.f_back
        if self.armed:
            _sys.settrace(self.global_trace)

    def disarm(self):
        _sys.settrace(None)
        for frame in self.armed:
            frame.f_trace = None
        self.armed = []

    def global_trace(self, frame, event, arg):
        return None

    def trace(self, frame, event, arg):
        if event != "line" or frame.f_lineno not in self.lines:
            return self.trace
        self.disarm()
        state = _snapshot(frame)
        if state is None:
            return None
        states = self.seen.setdefault(frame, set())
        key = (frame.f_lasti, state)
        if key in states:
            self.repeated = True
            raise _Repeated()
        states.add(key)
        return None
'''
