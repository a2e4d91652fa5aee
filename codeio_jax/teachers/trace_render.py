"""Chains of thought written from a real execution trace (trace_capture.py).

The explanation restates the task and the input, walks through `main_solution`
and the functions it calls, summarises each loop by its first passes and its
last, and ends with the exact JSON answer, so a reply verifies by
construction. For input prediction it starts from what the output means,
takes the recorded input as the candidate and confirms it with the forward
trace. For a revision turn it takes up the feedback and redoes the trace.
Everything here is a pure function of (record, pair, trace): the same inputs
give the same text, capped at `max_chars`.
"""

from __future__ import annotations

import json
from typing import Any

from codeio_jax.records import UnifiedRecord
from codeio_jax.teachers.trace_capture import Trace

MAX_CHARS = 6000
SHOWN_PASSES = 2  # passes shown at the start of a long loop (plus the last)


def explain_output(record: UnifiedRecord, kwargs: dict, trace: Trace, loops: dict,
                   max_chars: int = MAX_CHARS) -> str:
    head = [f"I need the value `{record.funcname}` returns for this input, so let me trace the code.",
            f"The input is {_json(kwargs)}."]
    tail = [f"So `{record.funcname}` returns {_json(trace.output)}.", "",
            "```json", json.dumps({"output": trace.output}, ensure_ascii=False), "```"]
    return _fit(head, narrate(trace.events, loops), tail, max_chars)


def explain_input(record: UnifiedRecord, kwargs: dict, trace: Trace, loops: dict,
                  max_chars: int = MAX_CHARS) -> str:
    meaning = _output_meaning(record.io_requirements)
    head = [f"The target output is {_json(trace.output)}."
            + (f" By the description, the output is {meaning}" if meaning else ""),
            f"Working back from what the code computes, a candidate input is {_json(kwargs)}. "
            f"Let me confirm it by tracing `{record.funcname}` forward."]
    tail = [f"With this input `{record.funcname}` returns {_json(trace.output)}, which is the target, "
            "so the input is feasible.", "",
            "```json", json.dumps({"input": kwargs}, ensure_ascii=False), "```"]
    return _fit(head, narrate(trace.events, loops), tail, max_chars)


def explain_revision(record: UnifiedRecord, kwargs: dict, trace: Trace, loops: dict, task: str,
                     feedback: str, max_chars: int = MAX_CHARS) -> str:
    opening = ("The feedback says my answer was wrong, so I will not trust my earlier steps "
               "and will trace the execution again, one step at a time.")
    body = (explain_output if task == "output_prediction" else explain_input)(
        record, kwargs, trace, loops, max_chars - len(opening) - 2)
    return f"{opening}\n\n{body}"


def narrate(events: list[dict], loops: dict) -> list[str]:
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
                lines.extend(_loop(events[index:end], loops[str(event["line"])], event))
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


def _loop(events: list[dict], loop: dict, header: dict) -> list[str]:
    passes = _passes(events, header["line"], header["fn"])
    what = (f"for {loop['target']} in {loop['iter']}" if loop["kind"] == "for" else f"while {loop['test']}")
    count = len(passes)
    lines = [f"The loop `{what}` runs {count} time{'s' if count != 1 else ''}."]
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
    if final and count > 1:
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
    for line in io_requirements.splitlines():
        if "`return`" in line and ":" in line:
            return line.split(":", 1)[1].strip()
    return ""


def _assignments(values: dict[str, Any]) -> str:
    return ", ".join(f"{name} = {value}" for name, value in values.items())


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
