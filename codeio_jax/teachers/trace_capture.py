"""Recording what a record's code really does on one input, in the sandbox.

The trace teacher (trace_render.py) grounds its chains of thought in execution: `main_solution`
runs under `sys.settrace` inside a sandboxed child, and the harness below (a
prelude) records, for the record's own code only:
  call    a function of the record is entered, with its arguments
  set     variables a line changed, with their new values
  branch  an `if` test and whether it held
  iter    a loop header reached again (one event per pass)
  return  a function of the record returns, with its value
Values are short reprs, the number of events is capped, and the program still
runs to its end so the final output is always exact.

Which lines are `if` tests and loop headers comes from the AST, computed here
on the host and handed to the harness as data.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from typing import Any

from codeio_jax import syntax
from codeio_jax.execution import Check, Limits
from codeio_jax.records import UnifiedRecord


@dataclasses.dataclass(frozen=True)
class Trace:
    events: list[dict]
    output: Any
    truncated: bool


def code_map(code: str) -> dict:
    """Line maps of the code: `if` tests and loop headers, with their text."""
    tree = syntax.parse(code)
    branches, loops = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and node.body[0].lineno > node.test.end_lineno:
            branches[node.test.lineno] = {
                "test": ast.get_source_segment(code, node.test),
                "body": node.body[0].lineno,
            }
        elif isinstance(node, (ast.For, ast.While)):
            loop = {"kind": "while" if isinstance(node, ast.While) else "for"}
            if isinstance(node, ast.For):
                loop["target"] = ast.get_source_segment(code, node.target)
                loop["iter"] = ast.get_source_segment(code, node.iter)
            else:
                loop["test"] = ast.get_source_segment(code, node.test)
            loop["end"] = node.end_lineno
            loops[node.lineno] = loop
    return {"branches": {str(k): v for k, v in branches.items()},
            "loops": {str(k): v for k, v in loops.items()}}


def trace_check(record: UnifiedRecord, kwargs: dict, limits: Limits | None = None,
                max_events: int = 3000, value_chars: int = 80, lines: dict | None = None) -> Check:
    """lines: the record's code_map, when the caller already has it."""
    params = {"funcname": record.funcname, "kwargs": kwargs, "max_events": max_events,
              "value_chars": value_chars, **(lines or code_map(record.refcode))}
    source = f"{record.refcode}\n\n__codeio_params__ = {json.dumps(params, ensure_ascii=False)!r}\n"
    return Check(source, entry="__codeio_trace__", limits=limits, prelude=TRACE_PRELUDE)


def parse_trace(value: Any) -> Trace:
    if not (isinstance(value, dict) and isinstance(value.get("events"), list) and "output" in value):
        raise ValueError("the trace harness returned something else than a trace")
    return Trace(value["events"], value["output"], bool(value.get("truncated")))


TRACE_PRELUDE = '''
def __codeio_trace__():
    import json, re, sys, types
    address = re.compile(r" at 0x[0-9a-fA-F]+")
    params = json.loads(__codeio_params__)
    branches, loops = params["branches"], params["loops"]
    cap, width = params["max_events"], params["value_chars"]
    events, state = [], {"truncated": False}
    previous, seen, passes = {}, {}, {}
    skip = (types.FunctionType, types.ModuleType, type, types.BuiltinFunctionType)

    def short(value, nested=False):
        try:
            if type(value).__repr__ is object.__repr__:
                # The default repr shows an address, which differs run to run:
                # show the object's class and fields instead.
                fields = getattr(value, "__dict__", {})
                inner = ", ".join("%s=%s" % (k, short(v, True)) for k, v in list(fields.items())[:4]
                                  if not nested)
                text = "%s(%s)" % (type(value).__name__, inner if not nested else "...")
            else:
                # Objects inside containers still print their address: drop it.
                text = address.sub("", repr(value))
        except Exception:
            text = "<%s>" % type(value).__name__
        return text if len(text) <= width else text[:width - 3] + "..."

    def emit(event):
        if len(events) < cap:
            events.append(event)
        else:
            state["truncated"] = True

    def changes(frame):
        now = {k: short(v) for k, v in frame.f_locals.items()
               if not isinstance(v, skip) and not k.startswith("__")}
        before = seen.get(frame, {})
        seen[frame] = now
        return {k: v for k, v in now.items() if before.get(k) != v}

    def tracer(frame, event, arg):
        # The record's own functions only; comprehensions and lambdas show up
        # as the values they produce in the line that uses them.
        if frame.f_code.co_filename != "<check>" or frame.f_code.co_name.startswith("<"):
            return None
        name = frame.f_code.co_qualname
        if event == "call":
            emit({"e": "call", "fn": name, "args": changes(frame)})
            return tracer
        line = previous.get(frame)
        if line is not None:
            changed = changes(frame)
            if changed:
                emit({"e": "set", "fn": name, "line": line, "vars": changed})
            test = branches.get(str(line))
            if test is not None and event == "line":
                emit({"e": "branch", "fn": name, "line": line, "test": test["test"],
                      "taken": frame.f_lineno == test["body"]})
        if event == "line":
            previous[frame] = frame.f_lineno
            loop = loops.get(str(frame.f_lineno))
            if loop is not None:
                key = (frame, frame.f_lineno)
                passes[key] = passes.get(key, 0) + 1
                emit({"e": "iter", "fn": name, "line": frame.f_lineno, "n": passes[key]})
        elif event == "return":
            emit({"e": "return", "fn": name, "value": short(arg)})
            previous.pop(frame, None)
            seen.pop(frame, None)
        return tracer

    solve = globals()[params["funcname"]]
    sys.settrace(tracer)
    try:
        output = solve(**params["kwargs"])
    finally:
        sys.settrace(None)
    output = json.loads(json.dumps(output))
    return {"events": events, "output": output, "truncated": state["truncated"]}
'''
