"""Recording what a record's code really does on one input, in the sandbox.

The trace teacher (trace_render.py) grounds its chains of thought in execution: `main_solution`
runs under `sys.settrace` inside a sandboxed child, and the harness below (a
prelude) records, for the record's own code only:
  call    a function of the record is entered, with its arguments
  set     variables a line changed, with their new values
  branch  an `if` test and whether it held
  iter    a loop header reached again (one event per pass)
  return  a function of the record returns, with its value
Values are written as a reader would (an object as its class and fields, never
its address) and never longer than a bound, however big the value. Tracing is
bounded by budgets of events, not by the clock (DETAIL_EVENTS, COUNTED_EVENTS):
past the first only calls and loop passes are counted; past the second the call
is stopped (`stopped` in the result), and the reply takes its output from the
pair the ios stage recorded and found deterministic, so the slowest programs
cost the budgets, not their own run; the output is exact either way.

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


# Detailed events (every changed variable, every test) are what a reply narrates;
# past them only calls and loop passes are counted, which costs a tracer call per
# line but no reprs; past that the call stops (its output is the recorded one). A
# trace's cost is bounded by these budgets, not by how long the code runs.
DETAIL_EVENTS = 3000
COUNTED_EVENTS = 200_000


@dataclasses.dataclass(frozen=True)
class Trace:
    events: list[dict]
    output: Any
    truncated: bool  # the detailed events stop before the end
    calls: dict[str, int] = dataclasses.field(default_factory=dict)  # each function's calls, in all
    passes: dict[str, int] = dataclasses.field(default_factory=dict)  # "fn:line" of a loop header: passes in all
    counted_to_end: bool = True  # False: the counts stop too; the call was stopped there


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
            "loops": {str(k): v for k, v in loops.items()},
            "returns": _last_returns(tree, code)}


def _last_returns(tree: ast.Module, code: str) -> dict[str, str]:
    """Each top-level function's last `return` expression as written: where
    reasoning backwards from an output starts."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            returns = [item for item in _own_nodes(node) if isinstance(item, ast.Return) and item.value is not None]
            if returns:
                last = max(returns, key=lambda item: item.lineno)
                found[node.name] = ast.get_source_segment(code, last.value) or ""
    return found


def _own_nodes(function: ast.FunctionDef):
    """The nodes of a function's body, not descending into functions it defines."""
    pending = list(function.body)
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            pending.extend(ast.iter_child_nodes(node))


def trace_check(record: UnifiedRecord, kwargs: dict, limits: Limits | None = None,
                max_events: int = DETAIL_EVENTS, counted_events: int = COUNTED_EVENTS, value_chars: int = 80,
                lines: dict | None = None) -> Check:
    """lines: the record's code_map, when the caller already has it."""
    params = {"funcname": record.funcname, "kwargs": kwargs, "max_events": max_events,
              "counted_events": counted_events, "value_chars": value_chars,
              **(lines or code_map(record.refcode))}
    source = f"{record.refcode}\n\n__codeio_params__ = {json.dumps(params, ensure_ascii=False)!r}\n"
    return Check(source, entry="__codeio_trace__", limits=limits, prelude=TRACE_PRELUDE)


def parse_trace(value: Any, recorded_output: Any) -> Trace:
    """The harness's result; `recorded_output`, the pair's output from the ios
    stage, stands for the output of a call stopped at the counted budget."""
    if not (isinstance(value, dict) and isinstance(value.get("events"), list) and "output" in value):
        raise ValueError("the trace harness returned something else than a trace")
    output = recorded_output if value.get("stopped") else value["output"]
    return Trace(value["events"], output, bool(value.get("truncated")), value.get("calls", {}),
                 value.get("passes", {}), bool(value.get("counted_to_end", True)))


TRACE_PRELUDE = '''
def __codeio_trace__():
    import json, re, sys, types
    address = re.compile(r" at 0x[0-9a-fA-F]+")
    params = json.loads(__codeio_params__)
    branches, loops = params["branches"], params["loops"]
    cap, counted_cap, width = params["max_events"], params["counted_events"], params["value_chars"]
    events, state = [], {"mode": "detail", "counted": 0}
    previous, seen = {}, {}
    calls, passes = {}, {}
    skip = (types.FunctionType, types.ModuleType, type, types.BuiltinFunctionType)
    live = set()

    def short(value, room=None):
        # As a reader would write the value, and never longer than `room`:
        # containers are walked item by item until the room is spent, so a
        # list of a million numbers costs what its first few cost.
        room = width if room is None else room
        try:
            if isinstance(value, (list, tuple, set, frozenset, dict)):
                if isinstance(value, dict):
                    items, opening, closing = list(value.items())[:room], "{", "}"
                elif isinstance(value, list):
                    items, opening, closing = value[:room], "[", "]"
                elif isinstance(value, tuple):
                    items, opening, closing = value[:room], "(", ",)" if len(value) == 1 else ")"
                else:
                    items = sorted(value, key=repr)[:room] if len(value) <= 64 else list(value)[:room]
                    opening, closing = ("{", "}") if value else ("set(", ")")
                parts, used = [], len(opening) + len(closing)
                for item in items:
                    text = ("%s: %s" % (short(item[0], room), short(item[1], room))
                            if isinstance(value, dict) else short(item, room))
                    if used + len(text) + 2 > room:
                        parts.append("...")
                        break
                    parts.append(text)
                    used += len(text) + 2
                else:
                    if len(items) < len(value):
                        parts.append("...")
                return opening + ", ".join(parts) + closing
            if type(value).__repr__ is object.__repr__:
                # The default repr shows an address, which differs run to run:
                # show the object's class and its fields instead.
                fields = list(getattr(value, "__dict__", {}).items())[:4]
                inner = ", ".join("%s=%s" % (k, short(v, room // 2)) for k, v in fields) if room > 24 else "..."
                text = "%s(%s)" % (type(value).__name__, inner)
            else:
                text = address.sub("", repr(value))  # a function's or a generator's, run to run
        except Exception:
            text = "<%s>" % type(value).__name__
        return text if len(text) <= room else text[:max(room - 3, 1)] + "..."

    def emit(event):
        if len(events) < cap:
            events.append(event)
        elif state["mode"] == "detail":
            state["mode"] = "counted"

    def changes(frame):
        now = {k: short(v) for k, v in frame.f_locals.items()
               if not isinstance(v, skip) and not k.startswith("__")}
        before = seen.get(frame, {})
        seen[frame] = now
        return {k: v for k, v in now.items() if before.get(k) != v}

    class Stop(BaseException):
        # Not an Exception: the record's own `except Exception` must not catch it.
        pass

    def stop():
        # Nothing is recorded from here on, and the call ends here: its output is
        # the recorded one. Code that catches even this runs on untraced, and what
        # it returns is not used either.
        state["mode"] = "off"
        sys.settrace(None)
        for frame in list(live):
            frame.f_trace = None
        live.clear()
        raise Stop()

    def own_name(frame):
        # A function defined inside another by the name written in the code,
        # not `main_solution.<locals>.helper`.
        return frame.f_code.co_qualname.rsplit("<locals>.", 1)[-1]

    def counting(frame, event, arg):
        state["counted"] += 1
        if state["counted"] > counted_cap:
            stop()
        if event == "line" and str(frame.f_lineno) in loops:
            key = "%s:%d" % (own_name(frame), frame.f_lineno)
            passes[key] = passes.get(key, 0) + 1
        elif event == "return":
            live.discard(frame)
        return counting

    def tracer(frame, event, arg):
        # The record's own functions only; comprehensions and lambdas show up
        # as the values they produce in the line that uses them.
        if state["mode"] == "off":
            return None
        if frame.f_code.co_filename != "<check>" or frame.f_code.co_name.startswith("<"):
            return None
        name = own_name(frame)
        if event == "call":
            calls[name] = calls.get(name, 0) + 1
            live.add(frame)
        if state["mode"] == "counted":
            frame.f_trace = counting
            return counting(frame, event, arg)
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
            if str(frame.f_lineno) in loops:
                key = "%s:%d" % (name, frame.f_lineno)
                passes[key] = passes.get(key, 0) + 1
                emit({"e": "iter", "fn": name, "line": frame.f_lineno, "n": passes[key]})
        elif event == "return":
            emit({"e": "return", "fn": name, "value": short(arg)})
            previous.pop(frame, None)
            seen.pop(frame, None)
            live.discard(frame)
        return tracer

    solve = globals()[params["funcname"]]
    output = None
    sys.settrace(tracer)
    try:
        output = solve(**params["kwargs"])
    except Stop:
        pass
    finally:
        sys.settrace(None)
    stopped = state["mode"] == "off"
    output = None if stopped else json.loads(json.dumps(output))
    return {"events": events, "output": output, "truncated": state["mode"] != "detail",
            "calls": calls, "passes": passes, "counted_to_end": not stopped, "stopped": stopped}
'''
