"""Which CRUXEval checks run no generated code, and how to run those in batches.

A CRUXEval check is the sample's code followed by `assert <output> == <generation>`.
When the generation is pure data (a literal for output prediction, a call
`f(<literals>)` for input prediction) and the sample's code is self-contained
(no imports, no `global`, no reflection), the check executes only the
benchmark's own code on data: there is no untrusted code to isolate from its
neighbours. Such checks run in batches, one sandboxed child per batch, each check
on a fresh execution of its sample's code under its own deadline, which gives
the same result as one child per check at a fraction of the cost; and copies
of the same data-only program run once. Anything else,
and any batch that does not finish cleanly, runs as one fresh child per check.
"""

from __future__ import annotations

import ast

from codeio_jax import syntax
from codeio_jax.verify.nontermination import RUNTIME, watchable_loops

# Names through which the sample's code could change state that outlives one
# check in the same process (builtins, modules, other frames).
_REFLECTIVE_NAMES = frozenset({
    "getattr", "setattr", "delattr", "globals", "locals", "vars", "eval", "exec", "compile",
    "open", "input", "breakpoint", "help", "exit", "quit", "memoryview", "__import__",
    "__builtins__", "classmethod", "staticmethod", "property", "super", "object",
})


def is_literal(node: ast.AST) -> bool:
    """True for constants and containers of constants (no names, no calls)."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(is_literal(item) for item in node.elts)
    if isinstance(node, ast.Dict):
        return all(key is not None and is_literal(key) for key in node.keys) and all(
            is_literal(value) for value in node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float, complex))
    return False


def data_only_key(assert_line: str, mode: str) -> str | None:
    """For an `assert <output> == <generation>` that holds nothing but data
    beside one call of `f` (input mode), a key that is equal exactly when two
    such lines are the same program (the AST, so quotes and spacing do not
    matter); None for any other line. The line is parsed as it will run, so a
    generation that adds a statement or an assert message is not data.

    Equal keys give equal results: the sample's code is deterministic and the
    line runs nothing else, so one run answers for every copy."""
    try:
        tree = syntax.parse(assert_line)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    return ast.dump(tree) if _is_data_only(tree, mode) else None


def _is_data_only(tree: ast.Module, mode: str) -> bool:
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert) or tree.body[0].msg:
        return False
    test = tree.body[0].test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    left, right = test.left, test.comparators[0]
    if not is_literal(left):
        return False
    if mode == "output":
        return is_literal(right)
    return (isinstance(right, ast.Call) and isinstance(right.func, ast.Name) and right.func.id == "f"
            and all(is_literal(arg) for arg in right.args)
            and all(kw.arg is not None and is_literal(kw.value) for kw in right.keywords))


def code_is_self_contained(code: str) -> bool:
    try:
        tree = syntax.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal)):
            return False
        if isinstance(node, ast.Name) and (node.id in _REFLECTIVE_NAMES or node.id.startswith("__")):
            return False
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            return False
    return True


def batch_program(items: list[tuple[str, str]], timeout_s: float, prove_loops: bool = True) -> str:
    """A program whose `__codeio_batch__()` runs each (sample code, assert line)
    as its own program, under its own deadline, and returns one [status,
    message] per item. prove_loops: report an endless `while` loop as a timeout
    as soon as nontermination.py proves it, instead of waiting out the deadline."""
    programs = [(code + "\n" + line, code.count("\n") + 2, watchable_loops(code) if prove_loops else [])
                for code, line in items]
    return RUNTIME + _BATCH_TEMPLATE.format(programs=repr(programs), timeout=float(timeout_s))


_BATCH_TEMPLATE = '''
def __codeio_batch__():
    import signal, time

    class _Deadline(BaseException):
        pass

    tick = 0.05
    deadline = [0.0]
    watcher = [None]

    def _alarm(signum, frame):
        if time.monotonic() >= deadline[0]:
            raise _Deadline()
        if watcher[0] is not None and not watcher[0].armed:
            watcher[0].arm(frame)

    signal.signal(signal.SIGALRM, _alarm)
    results = []
    for source, assert_line, loop_lines in {programs}:
        watcher[0] = _Watcher(loop_lines) if loop_lines else None
        deadline[0] = time.monotonic() + {timeout}
        status = None
        try:
            try:
                if loop_lines:
                    signal.setitimer(signal.ITIMER_REAL, tick, tick)
                else:
                    signal.setitimer(signal.ITIMER_REAL, {timeout})
                exec(compile(source, "<item>", "exec"), {{"__name__": "__main__"}})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                if watcher[0] is not None:
                    watcher[0].disarm()
            status = ["passed", ""]
        except _Deadline:
            status = ["timeout", "exceeded the {timeout} s limit"]
        except MemoryError:
            status = ["memory", "out of memory"]
        except BaseException as exc:
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            at_assert = (tb is not None and tb.tb_frame.f_code.co_filename == "<item>"
                         and tb.tb_frame.f_code.co_name == "<module>" and tb.tb_lineno == assert_line)
            if isinstance(exc, AssertionError) and at_assert:
                status = ["failed", ""]
            else:
                status = ["error:" + type(exc).__name__, str(exc)[:300]]
        if watcher[0] is not None and watcher[0].repeated:
            status = ["timeout", "never ends: a while loop came back to the same state"]
        results.append(status)
    return results
'''
