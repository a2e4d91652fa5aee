"""The prompts of the pipeline, in our own wording, and the parser of transform replies.

Every prompt is a list of chat messages ({"role", "content"}), the form every
chat model and the OpenAI-compatible API take.

- transform: raw code in; a reply with four sections out (main function,
  input/output description, input generator, problem statement), which
  `parse_transform_reply` turns into the fields of a unified record.
- output prediction: question, I/O description, reference code, one input;
  the answer is a JSON object {"output": ...}.
- input prediction: the same with one output; the answer is a feasible input
  {"input": {...}}.
- revision (CodeI/O++): the verifier's feedback as a new user turn after the
  model's first answer.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
from typing import Any

from codeio_jax import syntax
from codeio_jax.records import INPUT_PREDICTION, OUTPUT_PREDICTION, Prompt, UnifiedRecord

Message = dict[str, str]

TRANSFORM_SYSTEM = (
    "You turn source code into self-contained reasoning exercises. You keep the "
    "logic of the original code, and you answer in exactly the format asked for."
)

TRANSFORM_USER = """Here is a piece of source code:

```python
{code}
```

Rewrite it into an exercise with these four sections, each under its own heading:

### Main function
A complete Python program (imports, helper functions and classes) that defines
`main_solution(...)`. Its keyword arguments and its return value must be
JSON-serializable (numbers, strings, booleans, lists, dicts with string keys); if
the original code works on richer objects, convert inside `main_solution`. It
must not read input, print, or depend on the clock.

### Input/output description
One line per argument, then one line for the result, in this form:
Input:
  `name` (type): what it means and its valid range
Output:
  `return` (type): what it means

### Input generator
A Python function `input_generator()` that uses the `random` module (never
seeding it) to return a fresh dict of keyword arguments for `main_solution` on
each call. Keep inputs small: lists and dicts under 20 items, strings under 100
characters.

### Problem statement
A question in plain language that names every argument in backticks and asks
what `main_solution` returns for them, without mentioning the code.
"""

PREDICTION_SYSTEM = (
    "You reason step by step about what code does, without running it, and you "
    "end every answer with the JSON object that is asked for."
)

_CONTEXT = """{problem}

The inputs and the output are described as follows:

{io_requirements}

Here is reference code that solves the problem:

```python
{refcode}
```
"""

OUTPUT_QUESTION = """{context}
Given this input:

{input}

What does the code return? Think it through step by step, then end your answer
with a JSON object of the form {{"output": <value>}}, where <value> follows the
output description exactly."""

INPUT_QUESTION = """{context}
The code returned this output:

{output}

Find an input that makes the code return exactly this output. Think it through
step by step, then end your answer with a JSON object of the form
{{"input": {{<argument name>: <value>, ...}}}} that names every argument."""

REVISION = """{feedback}

Look at your reasoning again, find where it went wrong, and answer once more,
ending with the JSON object in the same form as before."""


class TransformParseError(ValueError):
    """A transform reply that does not yield a usable unified record."""


def transform_messages(code: str) -> list[Message]:
    return [{"role": "system", "content": TRANSFORM_SYSTEM},
            {"role": "user", "content": TRANSFORM_USER.format(code=code.strip("\n"))}]


def prediction_prompts(record: UnifiedRecord, seed: int = 0, per_task: int = 3) -> list[Prompt]:
    """`per_task` output-prediction and `per_task` input-prediction prompts over
    distinct pairs of the record (fewer when it has fewer pairs), chosen by a
    seed derived from (seed, record id)."""
    if per_task < 0:
        raise ValueError(f"per_task must be at least 0, got {per_task}")
    context = _CONTEXT.format(problem=record.problem_description.strip(),
                              io_requirements=record.io_requirements.strip(),
                              refcode=record.refcode.strip("\n"))
    digest = hashlib.sha256(f"{seed}\0{record.id}\0prompts".encode("utf-8", "surrogatepass")).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    prompts = []
    for task, template in ((OUTPUT_PREDICTION, OUTPUT_QUESTION), (INPUT_PREDICTION, INPUT_QUESTION)):
        chosen = sorted(rng.sample(range(len(record.ios)), min(per_task, len(record.ios))))
        for index in chosen:
            pair = record.ios[index]
            shown = {"input": _json(pair.input)} if task == OUTPUT_PREDICTION else {"output": _json(pair.output)}
            question = template.format(context=context, **shown)
            messages = ({"role": "system", "content": PREDICTION_SYSTEM},
                        {"role": "user", "content": question})
            prompts.append(Prompt(record.id, task, index, messages, pair.input, pair.output))
    return prompts


def revision_messages(messages: list[Message] | tuple[Message, ...], reply: str,
                      feedback: str) -> list[Message]:
    """The conversation so far, the model's reply, and the feedback as a new turn."""
    return [*messages, {"role": "assistant", "content": reply},
            {"role": "user", "content": REVISION.format(feedback=feedback.strip())}]


_HEADING_RE = re.compile(r"^[ \t]*(?:#{1,6}[ \t]*|\*\*)?[ \t]*(?P<title>main function|input/output description|"
                         r"input generator|problem statement)[ \t]*:?[ \t]*(?:\*\*)?[ \t]*:?[ \t]*$",
                         re.IGNORECASE | re.MULTILINE)
_CODE_RE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_transform_reply(reply: str) -> dict:
    """The unified-record fields of a transform reply: `refcode`, `funcname`,
    `io_requirements`, `input_generator`, `problem_description`. Raises
    TransformParseError that says which part is missing or broken."""
    sections = _sections(reply)
    missing = [name for name in ("main function", "input/output description", "input generator",
                                 "problem statement") if not sections.get(name, "").strip()]
    if missing:
        raise TransformParseError(f"the reply has no {', no '.join(missing)} section")
    refcode = _code_block(sections["main function"], "main function")
    generator = _code_block(sections["input generator"], "input generator")
    _require_function(refcode, "main_solution", "main function")
    _require_function(generator, "input_generator", "input generator")
    if re.search(r"\brandom\.seed\s*\(", generator):
        raise TransformParseError("the input generator seeds `random` itself; the pipeline seeds it")
    return {
        "refcode": refcode,
        "funcname": "main_solution",
        "io_requirements": sections["input/output description"].strip(),
        "input_generator": generator,
        "problem_description": sections["problem statement"].strip(),
    }


def _sections(reply: str) -> dict[str, str]:
    matches = list(_HEADING_RE.finditer(reply))
    sections: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(reply)
        title = match.group("title").lower()
        sections.setdefault(title, reply[match.end():end])
    return sections


def _code_block(text: str, section: str) -> str:
    blocks = _CODE_RE.findall(text)
    if not blocks:
        raise TransformParseError(f"the {section} section has no ```python code block")
    return max(blocks, key=len).strip("\n") + "\n"


def _require_function(code: str, name: str, section: str) -> None:
    try:
        tree = syntax.parse(code)
    except SyntaxError as exc:
        raise TransformParseError(f"the {section} does not parse: line {exc.lineno}: {exc.msg}") from None
    if not any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body):
        raise TransformParseError(f"the {section} does not define `{name}` at its top level")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
