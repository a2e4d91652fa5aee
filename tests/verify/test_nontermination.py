"""Proving endless loops early must never change a verdict."""

import sys
import textwrap

import pytest

from codeio_jax.verify import cruxeval
from codeio_jax.verify.nontermination import RUNTIME, watchable_loops
from tests.conftest import shared_data


def code(text):
    return textwrap.dedent(text).strip() + "\n"


@pytest.mark.parametrize("source, lines", [
    ("def f(s):\n    while s.endswith('x'):\n        s = s[:-1]\n    return s", [2]),
    ("def f(n):\n    while n:\n        while n > 5:\n            n -= 1\n        n -= 1\n    return n", [2, 3]),
    ("def f(xs):\n    for x in xs:\n        while x:\n            x -= 1\n    return 0", []),
    ("def f(n):\n    try:\n        while n:\n            n -= 1\n    except ValueError:\n        pass", []),
    ("def f(n):\n    while n: n -= 1\n    return n", []),
    ("def f(n):\n    while (n >\n           0):\n        n -= 1", []),
    ("def f(n):\n    while n:\n        print(n)\n        n -= 1", []),
    ("def f(a, b):\n    while a is not b:\n        a = b\n    return a", []),
    ("def f(a):\n    while a is not None:\n        a = None\n    return a", [2]),
    ("class C:\n    pass\ndef f(n):\n    while n:\n        n -= 1", []),
])
def test_which_loops_are_watched(source, lines):
    assert watchable_loops(source) == lines


def snapshot_of(source, name="g"):
    """The snapshot of function `name`'s frame as it returns, defined in a
    module namespace that holds nothing else."""
    runtime = {}
    exec(RUNTIME, runtime)
    module = {}
    exec(textwrap.dedent(source), module)
    frames = []

    def grab(frame, event, arg):
        if event == "return" and frame.f_code is module[name].__code__:
            frames.append(runtime["_snapshot"](frame))
        return grab

    sys.settrace(grab)
    try:
        module[name]()
        module[name]()
    finally:
        sys.settrace(None)
    assert frames[0] == frames[1], "two runs of the same function from the same state differ"
    return frames[0]


def test_snapshots_see_aliasing_and_give_up_on_hidden_state():
    aliased = "def g():\n    a = [0]\n    b = a\n    return 1"
    separate = "def g():\n    a = [0]\n    b = [0]\n    return 1"
    assert snapshot_of(aliased) is not None
    assert snapshot_of(aliased) != snapshot_of(separate)
    assert snapshot_of("def g():\n    s = {1, 2}\n    return 1") is None
    assert snapshot_of("def g():\n    it = iter([1, 2])\n    return 1") is None
    assert snapshot_of("def g():\n    x = -0.0\n    return 1") != snapshot_of("def g():\n    x = 0.0\n    return 1")
    # Module globals are part of the state.
    assert snapshot_of("N = [1]\ndef g():\n    return 1") != snapshot_of("N = [2]\ndef g():\n    return 1")


TRICKY = {
    # State reachable only through a function's mutable default: it changes, so
    # the loop must run to its end.
    "default_counter": (code("""
        def step(acc=[]):
            acc.append(1)
            return len(acc)
        def f(n):
            while step() < n:
                pass
            return n
    """), ["f(20000)", "f(5)"], "20000"),
    # A closure cell as the only changing state.
    "closure_counter": (code("""
        def f(n):
            c = [0]
            def bump():
                c[0] += 1
                return c[0]
            while bump() < n:
                pass
            return c[0]
    """), ["f(30000)", "f(3)"], "30000"),
    # Two lists that compare equal but are not the same object: the loop ends
    # because mutating one does not touch the other.
    "aliasing": (code("""
        def f(k):
            a = [0]
            b = a
            while a[0] == 0:
                b = [0] if k else b
                b[0] = 1
                k = 0
            return k
    """), ["f(1)", "f(0)"], "0"),
    # Recursion that repeats its caller's state is a deeper frame, not a loop.
    "recursion": (code("""
        def f(n):
            while n > 0:
                return f(n)
            return 0
    """), ["f(1)", "f(0)"], "0"),
    # The classic endless loops, which are proved.
    "endless": (code("""
        def f(s, suffix):
            while s.endswith(suffix):
                s = s[:-len(suffix)] if suffix else s
            return s
    """), ["f('abc', '')", "f('abcc', 'c')"], "'ab'"),
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_batched_verdicts_equal_one_child_per_check(sandbox, name):
    source, calls, output = TRICKY[name]
    samples = {"s": cruxeval.Sample("s", source, "", output)}
    generations = {"s": calls}
    batched = cruxeval.score(generations, "input", samples, sandbox, batch=True)
    isolated = cruxeval.score(generations, "input", samples, sandbox, batch=False)
    assert batched.batched_checks == len(calls)
    assert batched.statuses == isolated.statuses, name


def test_cruxeval_loops_are_proved_quickly(sandbox):
    samples = cruxeval.load_samples(shared_data("cruxeval/cruxeval.jsonl"))
    gens = {"sample_192": ["f('!klcd!ma:ri', '')"], "sample_396": ["f({'a': 1})"],
            "sample_650": ["f('', '')"]}
    report = cruxeval.score(gens, "input", samples, sandbox)
    assert all(s == ["timeout"] for s in report.statuses.values())
    assert all(m == ["never ends: a while loop came back to the same state"]
               for m in report.messages.values()), report.messages
