"""Zero-shot chat prompts for CRUXEval, and reading a model's answer back out.

The prompt shows the function and an assertion with a blank, in the words of
our output- and input-prediction prompts, and asks for the completed assertion
between [ANSWER] and [/ANSWER] after the reasoning. `generation_from_reply`
turns a reply into what the official scorer takes: for output prediction the
expression right of `==`, for input prediction the call `f(...)` left of it.
Plain Python, no TensorFlow: the SeqIO eval tasks and the trainer's sampler
both use it.
"""

from __future__ import annotations

import ast
import re

from codeio_jax import syntax

SYSTEM = ("You reason step by step about what code does, without running it, and you end every "
          "answer with the completed assertion between [ANSWER] and [/ANSWER].")

OUTPUT_QUESTION = """Here is a Python function:

```python
{code}
```

Complete this assertion with the literal value the call returns (no expressions, no calls):

assert f({input}) == ??

Think it through step by step, then give the full assertion as
[ANSWER]assert f({input}) == <value>[/ANSWER]"""

INPUT_QUESTION = """Here is a Python function:

```python
{code}
```

Find an input for which the call returns this output, and complete the assertion:

assert f(??) == {output}

Think it through step by step, then give the full assertion as
[ANSWER]assert f(<input>) == {output}[/ANSWER]"""

_ANSWER_RE = re.compile(r"\[ANSWER\](.*?)\[/ANSWER\]", re.DOTALL)


def messages(mode: str, code: str, input: str, output: str) -> list[dict]:
    if mode not in ("input", "output"):
        raise ValueError(f"mode must be 'input' or 'output', got {mode!r}")
    template = OUTPUT_QUESTION if mode == "output" else INPUT_QUESTION
    question = template.format(code=code.strip("\n"), input=input, output=output)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def generation_from_reply(mode: str, reply: str) -> str:
    """What to score from a reply: the last [ANSWER] block (else the last line
    that starts with `assert`), split at its top-level `==`. A reply without
    an assertion gives its last non-empty line, which the scorer then judges."""
    blocks = _ANSWER_RE.findall(reply)
    if blocks:
        text = blocks[-1].strip()
    else:
        lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
        asserts = [line for line in lines if line.startswith("assert ")]
        text = asserts[-1] if asserts else (lines[-1] if lines else "")
    left, right = _split_assertion(text)
    if left is None:
        return text
    return right if mode == "output" else left


def _split_assertion(text: str) -> tuple[str | None, str | None]:
    """(left, right) of `assert left == right`, split where Python parses it."""
    try:
        tree = syntax.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):  # the last two: nested past the parser's limits
        return None, None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None, None
    test = tree.body[0].test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None, None
    return ast.get_source_segment(text, test.left), ast.get_source_segment(text, test.comparators[0])
