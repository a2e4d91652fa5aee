"""Chains of thought written from a real execution trace (trace_capture.py).

The explanation restates the task and the input, walks through `main_solution`
and the functions it calls, summarises each loop by its first passes and its
last, and ends with the exact JSON answer, so a reply verifies by
construction. Input prediction reasons backwards: from what the output means
and the code's last step to what must hold before it, then tries inputs by
running the code forward (one the input generator made, an edit of it), says
how each output misses the target, and ends with an input whose forward trace
reaches it. For a revision turn it takes up the feedback and redoes the work.
Everything here is a pure function of its arguments: the same inputs give the
same text, capped at `max_chars`.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from typing import Any, Sequence

from codeio_jax import syntax
from codeio_jax.records import UnifiedRecord
from codeio_jax.teachers.trace_capture import Trace
from codeio_jax.verify.compare import first_mismatch

MAX_CHARS = 6000
SHOWN_PASSES = 2  # passes shown at the start of a long loop (plus the last)


@dataclasses.dataclass(frozen=True)
class Try:
    """A candidate input run forward: what it returned, or how it failed."""

    input: dict
    output: Any = None
    error: str | None = None
    how: str = "generated"  # "generated" (the input generator's) or "edit" (one argument changed)
    changed: str | None = None  # the argument an edit changed


def explain_output(record: UnifiedRecord, kwargs: dict, trace: Trace, loops: dict,
                   max_chars: int = MAX_CHARS) -> str:
    head = [f"I need the value `{record.funcname}` returns for this input, so let me trace the code.",
            f"The input is {_json(kwargs)}."]
    tail = [f"So `{record.funcname}` returns {_json(trace.output)}.", "",
            "```json", json.dumps({"output": trace.output}, ensure_ascii=False), "```"]
    return _fit(head, narrate(trace.events, loops, trace.truncated) + counted(trace, loops), tail, max_chars)


def explain_input(record: UnifiedRecord, kwargs: dict, trace: Trace, loops: dict,
                  max_chars: int = MAX_CHARS, tries: Sequence[Try] = (), returns: dict | None = None) -> str:
    """Backwards from the target, through the tries, to `kwargs` traced forward."""
    fn = record.funcname
    meaning = _output_meaning(record.io_requirements)
    head = [f"The target output is {_json(trace.output)}."
            + (f" By the description, the output is {meaning}" if meaning else ""),
            f"I need an input for `{fn}` that produces it, so I work backwards from the end of the code."]
    head.append(_last_step(fn, (returns or {}).get(fn), trace, kwargs))
    # Tries while they take at most half the reply: the trace of the answer is the rest.
    shown = []
    for number, attempt in enumerate(tries):
        sentence = _try_sentence(fn, number, attempt, trace.output)
        if len("\n".join(head + shown)) + len(sentence) > max_chars // 2:
            break
        shown.append(sentence)
    head.extend(shown)
    if shown:
        misses = ("None of these gives the target, so I take what the misses tell" if len(shown) > 1
                  else "That does not give the target, so I take what the miss tells")
        head.append(f"{misses} me back through the code "
                    f"and try {_json(kwargs)}, tracing `{fn}` forward to check it.")
    else:
        head.append(f"Taking that back through the code, a candidate input is {_json(kwargs)}. "
                    f"Let me check it by tracing `{fn}` forward.")
    tail = [f"With this input `{fn}` returns {_json(trace.output)}, which is the target, "
            "so the input works.", "",
            "```json", json.dumps({"input": kwargs}, ensure_ascii=False), "```"]
    return _fit(head, narrate(trace.events, loops, trace.truncated) + counted(trace, loops), tail, max_chars)


def _last_step(fn: str, expression: str | None, trace: Trace, kwargs: dict) -> str:
    """The first step back from the output: what the code's last line needs.
    Never a value the input determines (that would be the answer, given away)."""
    needs = f" The input has to supply {_names(list(kwargs))}." if kwargs else ""
    if not expression:
        return f"The output is what `{fn}` finally returns, so the input must lead the code there.{needs}"
    target = _json(trace.output)
    expression = expression.strip()
    text = f"`{fn}` ends with `return {_clip(expression, 120)}`, so "
    try:
        node = syntax.parse(expression).body[0].value
    except (SyntaxError, ValueError, MemoryError, RecursionError, IndexError, AttributeError):
        node = None
    if isinstance(node, ast.Name):
        text += f"`{node.id}` must end as {target}."
    elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
        callee = ast.unparse(node.func)
        text += f"`{callee}` must return {target} for the arguments it is given."
    else:
        text += f"that expression must come to {target}."
    return text + needs


def _names(names: list[str]) -> str:
    shown = [f"`{name}`" for name in names]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _try_sentence(fn: str, number: int, attempt: Try, target: Any) -> str:
    if attempt.how == "edit":
        opening = f"Changing only `{attempt.changed}` of that guess gives {_json(attempt.input)}"
    else:
        opening = (f"{'A first' if number == 0 else 'Another'} guess, an input of the kind the input generator "
                   f"makes: {_json(attempt.input)}")
    if attempt.error:
        return f"{opening}; running `{fn}` on it fails ({attempt.error}), so that is not it."
    return f"{opening}; running `{fn}` forward on it gives {_json(attempt.output)}: {difference(attempt.output, target)}."


def difference(got: Any, target: Any) -> str:
    """How an output misses the target, as a person would say it."""
    if first_mismatch(got, target) is None:
        return "the target"
    if isinstance(got, bool) or isinstance(target, bool) or got is None or target is None:
        return f"{_json(got)} where the target is {_json(target)}"
    if _number(got) and _number(target):
        if got != 0 and target != 0 and (got < 0) != (target < 0):
            return "it has the wrong sign"
        gap = target - got
        amount = f"{abs(gap):g}" if isinstance(gap, float) else str(abs(gap))
        return f"it is {amount} too {'small' if gap > 0 else 'large'}"
    if type(got) is not type(target) and not (isinstance(got, (list, tuple)) and isinstance(target, (list, tuple))):
        return f"it is {_kind(got)} where the target is {_kind(target)}"
    if isinstance(got, str):
        if len(got) != len(target):
            return f"it is {len(got)} characters long, the target {len(target)}: too {'long' if len(got) > len(target) else 'short'}"
        at = next(i for i, (a, b) in enumerate(zip(got, target)) if a != b)
        return f"it is as long as the target but differs at character {at}"
    if isinstance(got, (list, tuple)):
        if len(got) != len(target):
            items = "1 item" if len(got) == 1 else f"{len(got)} items"
            return f"it has {items}, the target {len(target)}: too {'many' if len(got) > len(target) else 'few'}"
        at = next(i for i, (a, b) in enumerate(zip(got, target)) if first_mismatch(a, b) is not None)
        return f"it differs first at item {at}: {_clip(_json(got[at]), 60)} instead of {_clip(_json(target[at]), 60)}"
    if isinstance(got, dict):
        missing, extra = [k for k in target if k not in got], [k for k in got if k not in target]
        if missing or extra:
            return "its keys differ" + (f": it lacks {_json(missing[:3])}" if missing else "") + (
                f"{' and' if missing else ':'} it has {_json(extra[:3])} too" if extra else "")
        key = next(k for k in target if first_mismatch(got[k], target[k]) is not None)
        return f"at `{key}` it has {_clip(_json(got[key]), 60)} instead of {_clip(_json(target[key]), 60)}"
    return f"{_clip(_json(got), 60)} is not the target"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), f"a {type(value).__name__}")


def counted(trace: Trace, loops: dict) -> list[str]:
    """What the counts say where the detailed trace stops."""
    if not trace.truncated:
        return []
    parts = [f"`{fn}` is called {_count(n)}" for fn, n in trace.calls.items() if n > 1]
    for key, n in trace.passes.items():
        fn, line = key.rsplit(":", 1)
        loop = loops.get(line)
        if loop is not None:
            parts.append(f"the header of the loop `{_loop_text(loop)}` in `{fn}` is reached {_count(n)}")
    words = "at least " if not trace.counted_to_end else ""
    text = "From here on I follow the steps only by counting them"
    text += f": in all, {words}" + "; ".join(parts) + "." if parts else "."
    if not trace.counted_to_end:
        text += " Past that the code runs on to its end in the same way."
    return [text]


def _count(n: int) -> str:
    return "once" if n == 1 else f"{n:,} times"


def _loop_text(loop: dict) -> str:
    return f"for {loop['target']} in {loop['iter']}" if loop["kind"] == "for" else f"while {loop['test']}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def explain_revision(record: UnifiedRecord, kwargs: dict, trace: Trace, loops: dict, task: str,
                     feedback: str, max_chars: int = MAX_CHARS, tries: Sequence[Try] = (),
                     returns: dict | None = None) -> str:
    opening = ("The feedback says my answer was wrong, so I will not trust my earlier steps "
               "and will trace the execution again, one step at a time.")
    budget = max_chars - len(opening) - 2
    body = (explain_output(record, kwargs, trace, loops, budget) if task == "output_prediction"
            else explain_input(record, kwargs, trace, loops, budget, tries, returns))
    return f"{opening}\n\n{body}"


def narrate(events: list[dict], loops: dict, truncated: bool = False) -> list[str]:
    """Sentences for `main_solution` and the functions it calls: their steps in
    full, loops summarised; calls one level deeper only by what they return;
    long runs of calls to the same function collapsed."""
    lines: list[str] = []
    depth = 0
    run_fn, run_count = None, 0
    index = 0
    while index < len(events):
        event = events[index]
        kind = event["e"]
        if kind == "call":
            depth += 1
            if depth in (2, 3):
                if event["fn"] == run_fn:
                    run_count += 1
                else:
                    lines.extend(_collapsed(run_fn, run_count))
                    run_fn, run_count = event["fn"], 1
                if run_count <= 3:
                    lines.append(_call_sentence(event))
        elif kind == "return":
            if depth in (2, 3) and run_count <= 3 and not event["fn"].endswith("__init__"):
                lines.append(f"`{event['fn']}` returns {event['value']}.")
            depth -= 1
        elif depth <= 2 and not event["fn"].endswith("__init__"):
            lines.extend(_collapsed(run_fn, run_count))
            run_fn, run_count = None, 0
            if kind == "iter" and event["n"] == 1:
                end = _loop_end(events, index, loops)
                lines.extend(_loop(events[index:end], loops[str(event["line"])], event, cut=end == len(events)
                                   and truncated))
                index = end
                continue
            values = {k: v for k, v in event.get("vars", {}).items() if k != "self"}
            if kind == "set" and values and not event["fn"].endswith("__init__"):
                lines.append(f"Now {_assignments(values)}.")
            elif kind == "branch":
                lines.append(f"The test `{event['test']}` is {'true' if event['taken'] else 'false'}.")
        index += 1
    lines.extend(_collapsed(run_fn, run_count))
    return lines


def _call_sentence(event: dict) -> str:
    args = {k: v for k, v in event["args"].items() if k != "self"}
    if event["fn"].endswith(".__init__"):
        name = event["fn"][:-len(".__init__")]
        article = "an" if name[:1].lower() in "aeiou" else "a"
        return f"It creates {article} `{name}` with {_assignments(args) or 'no arguments'}."
    return f"It calls `{event['fn']}` with {_assignments(args) or 'no arguments'}."


def _collapsed(fn: str | None, count: int) -> list[str]:
    if fn is None or count <= 3:
        return []
    return [f"(`{fn}` is called {count - 3} more time{'s' if count - 3 != 1 else ''} the same way.)"]


def _loop_end(events: list[dict], start: int, loops: dict) -> int:
    """The index just past the loop that starts at `start`: the first event of
    the same function, at its depth, on a line outside the loop's body."""
    header = events[start]
    loop = loops[str(header["line"])]
    depth = 0
    for index in range(start + 1, len(events)):
        event = events[index]
        if event["e"] == "call":
            depth += 1
        elif event["e"] == "return":
            if depth == 0:
                return index
            depth -= 1
        elif depth == 0 and event["fn"] == header["fn"] and event.get("line") is not None:
            if not header["line"] <= event["line"] <= loop["end"]:
                return index
    return len(events)


def _loop(events: list[dict], loop: dict, header: dict, cut: bool = False) -> list[str]:
    """cut: the detailed trace stops inside this loop, so its passes are a lower bound."""
    passes = _passes(events, header["line"], header["fn"])
    what = _loop_text(loop)
    count = len(passes)
    lines = [f"The loop `{what}` runs {'at least ' if cut else ''}{count} time{'s' if count != 1 else ''}"
             + (" (my step-by-step trace stops inside it)." if cut else ".")]
    shown = range(count) if count <= SHOWN_PASSES + 2 else [*range(SHOWN_PASSES), count - 1]
    for i in shown:
        if count > SHOWN_PASSES + 2 and i == count - 1:
            lines.append(f"Passes {SHOWN_PASSES + 1} to {count - 1} go on in the same way.")
        summary = _pass_summary(passes[i])
        lines.append(f"Pass {i + 1}: {summary}." if summary else f"Pass {i + 1}: nothing changes.")
    final = {}
    for event in events:
        if event["e"] == "set" and event["fn"] == header["fn"]:
            final.update(event["vars"])
    if final and count > 1 and not cut:
        lines.append(f"After the loop: {_assignments(final)}.")
    return lines


def _passes(events: list[dict], line: int, fn: str) -> list[list[dict]]:
    passes: list[list[dict]] = []
    for event in events:
        if event["e"] == "iter" and event["line"] == line and event["fn"] == fn:
            passes.append([])
        elif passes:
            passes[-1].append(event)
    # The header is reached once more to find the loop finished: an empty pass.
    while passes and not passes[-1]:
        passes.pop()
    return passes


def _pass_summary(events: list[dict]) -> str:
    changed: dict[str, str] = {}
    tests: dict[str, list[int]] = {}
    calls: list[str] = []
    depth = 0
    for event in events:
        if event["e"] == "call":
            depth += 1
            if depth == 1:
                calls.append(event["fn"])
        elif event["e"] == "return":
            depth -= 1
        elif depth == 0 and event["e"] == "set":
            changed.update(event["vars"])
        elif depth == 0 and event["e"] == "branch":
            tests.setdefault(event["test"], [0, 0])[0 if event["taken"] else 1] += 1
    parts = []
    if changed:
        parts.append(_assignments(changed))
    for test, (true, false) in tests.items():
        parts.append(_test_outcome(test, true, false))
    if calls:
        parts.append("calling " + ", ".join(f"`{c}`" for c in dict.fromkeys(calls)))
    return "; ".join(parts)


def _test_outcome(test: str, true: int, false: int) -> str:
    if true and false:
        return f"`{test}` is true {_times(true)} and false {_times(false)}"
    return f"`{test}` is {'true' if true else 'false'}" + (f" ({_times(true or false)})" if true + false > 1 else "")


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _fit(head: list[str], body: list[str], tail: list[str], max_chars: int) -> str:
    """Head and tail always; as much of the body as fits, the middle left out."""
    budget = max_chars - len("\n".join(head + tail)) - 80
    text = "\n".join(body)
    if len(text) > budget:
        keep_start, keep_end = [], []
        used = 0
        for line in body:
            if used + len(line) + 1 > budget // 2:
                break
            keep_start.append(line)
            used += len(line) + 1
        used = 0
        for line in reversed(body[len(keep_start):]):
            if used + len(line) + 1 > budget // 2:
                break
            keep_end.insert(0, line)
            used += len(line) + 1
        body = keep_start + ["(Many similar steps follow; they are left out.)"] + keep_end
    return "\n".join(head + [""] + body + [""] + tail)


def _output_meaning(io_requirements: str) -> str:
    """What the description says the output is, worded to follow "the output is"."""
    for line in io_requirements.splitlines():
        if "`return`" in line and ":" in line:
            meaning = line.split(":", 1)[1].strip()
            # "The last number..." -> "the last number...", but "DNA ..." stays.
            if meaning[:1].isupper() and not meaning[1:2].isupper():
                meaning = meaning[0].lower() + meaning[1:]
            return meaning if meaning.endswith((".", "!", "?")) or not meaning else meaning + "."
    return ""


def _assignments(values: dict[str, Any]) -> str:
    return ", ".join(f"{name} = {value}" for name, value in values.items())


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
