"""The quality report of a pipeline run: `report.json` and `report.md` in its work folder.

What a reviewer asks of a dataset before trusting it: how many rows each stage
took in and let through and why it dropped the others; how many records were
non-deterministic, contaminated or duplicated; how often the first turn was
right and how often a revision fixed a wrong one, per task; how long the
replies are; and what they read like (ten per task, spread over the ids).
Everything is read back from the stage files, so a resumed run reports the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from codeio_jax.data.stages import read_rows
from codeio_jax.records import open_atomic

SAMPLES = 10
SAMPLE_CHARS = 2500  # of a reply, in report.md (report.json keeps each whole)
_LINE_PREFIX = re.compile(r"^line \d+: ")


def reason_class(stage: str, row: dict) -> str:
    """A short class of an error row's reason, to count by."""
    from codeio_jax.data import ios

    text = _LINE_PREFIX.sub("", str(row.get("error", "")))
    if stage == "ios":
        return ios.reason_kind(text)
    if stage == "decontaminate" and row.get("benchmark"):
        return f"contaminated: {row['benchmark']}"
    if stage == "dedup" and row.get("match"):
        return f"duplicate ({row['match']})"
    if text.startswith("the teacher failed: tracing failed: "):
        return "tracing failed: " + text.split(": ")[3]
    head = text.split(":")[0].strip()
    return head[:60] or "unknown"


def stage_table(stages: Sequence[Any], errors_of: dict[str, Path]) -> list[dict]:
    """Rows in and out and error classes per stage (`stages`: the pipeline's StageReports)."""
    table = []
    for stage in stages:
        reasons: dict[str, int] = {}
        path = errors_of.get(stage.name)
        if path is not None and Path(path).exists():
            for row in read_rows(path):
                kind = reason_class(stage.name, row)
                reasons[kind] = reasons.get(kind, 0) + 1
        summary = stage.summary
        table.append({"stage": stage.name, "rows_in": summary.items, "rows_out": summary.ok,
                      "error_rows": summary.errors, "seconds": round(stage.seconds, 2),
                      "reasons": dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0])))})
    return table


def turn_figures(verdict_rows: Iterable[dict]) -> dict:
    """Per task: rows, first-turn pass rate, revisions that fixed a wrong first
    turn, final pass rate, and reply length percentiles (characters)."""
    tasks: dict[str, dict] = {}
    for row in verdict_rows:
        task = tasks.setdefault(row.get("task", "?"), {"rows": 0, "first_correct": 0, "first_wrong": 0,
                                                        "revised_correct": 0, "final_correct": 0,
                                                        "_first": [], "_later": []})
        turns = row.get("turns") or []
        task["rows"] += 1
        if not turns:
            continue
        first = _correct(turns[0])
        task["first_correct" if first else "first_wrong"] += 1
        final = _correct(turns[-1])
        task["final_correct"] += final
        task["revised_correct"] += (not first) and final
        task["_first"].append(len(turns[0].get("reply", "")))
        task["_later"].extend(len(turn.get("reply", "")) for turn in turns[1:])
    for task in tasks.values():
        rows = task["rows"] or 1
        task["first_pass_rate"] = round(task["first_correct"] / rows, 4)
        task["final_pass_rate"] = round(task["final_correct"] / rows, 4)
        task["revision_fix_rate"] = (round(task["revised_correct"] / task["first_wrong"], 4)
                                     if task["first_wrong"] else None)
        task["first_reply_chars"] = percentiles(task.pop("_first"))
        task["revision_reply_chars"] = percentiles(task.pop("_later"))
    return dict(sorted(tasks.items()))


def _correct(turn: dict) -> bool:
    return bool(turn.get("verdict", {}).get("correct"))


def percentiles(values: list[int]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]

    return {"p10": at(0.1), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1]}


def samples(examples: Path, per_task: int = SAMPLES) -> dict[str, list[dict]]:
    """`per_task` examples of each task, evenly spaced over the ids (not the
    first ten). Two passes over the file, holding ids only, not the examples."""
    ids: dict[str, list[str]] = {}
    for example in read_rows(examples):
        ids.setdefault(example.get("task", "?"), []).append(str(example.get("id", "")))
    picked_ids: dict[str, list[str]] = {}
    for task, found in ids.items():
        found.sort()
        step = max(len(found) / per_task, 1.0)
        picked_ids[task] = [found[int(i * step)] for i in range(min(per_task, len(found)))]
    wanted = {(task, row_id) for task, chosen in picked_ids.items() for row_id in chosen}
    rows: dict[tuple[str, str], dict] = {}
    for example in read_rows(examples):
        key = (example.get("task", "?"), str(example.get("id", "")))
        if key in wanted and key not in rows:
            rows[key] = {"id": example.get("id"), "status": example.get("status"),
                         "prompt": example.get("prompt", ""), "turn_1": example.get("turn_1", ""),
                         "feedback_1": example.get("feedback_1", ""), "turn_2": example.get("turn_2", "")}
    return {task: [rows[(task, row_id)] for row_id in chosen] for task, chosen in sorted(picked_ids.items())}


def build(stages: Sequence[Any], errors_of: dict[str, Path], verdicts: Path | None, examples: Path,
          extra: dict | None = None) -> dict:
    table = stage_table(stages, errors_of)
    return {"stages": table,
            "records": _record_counts(table),
            "tasks": turn_figures(read_rows(verdicts)) if verdicts is not None and verdicts.exists() else {},
            "samples": samples(examples) if examples.exists() else {},
            **(extra or {})}


def _record_counts(table: list[dict]) -> dict:
    """The records dropped as non-deterministic, contaminated or duplicate: the
    stage table's reason classes (reason_class), summed."""
    reasons = {row["stage"]: row["reasons"] for row in table}

    def count(stage: str, prefix: str) -> int:
        return sum(n for kind, n in reasons.get(stage, {}).items() if kind.startswith(prefix))

    first = next((row for row in table if row["stage"] in ("transform", "ios")), None)
    return {"non_deterministic": count("ios", "non-deterministic"),
            "contaminated": count("decontaminate", "contaminated: "),
            "duplicates": count("dedup", "duplicate ("), "records_in": first["rows_in"] if first else 0}


def write(work: Path, report: dict) -> None:
    with open_atomic(work / "report.json", only_writer=True) as f:
        f.write(json.dumps(report, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    with open_atomic(work / "report.md", only_writer=True) as f:
        f.write(markdown(report))


def markdown(report: dict) -> str:
    lines = ["# Pipeline quality report", "", "## Stages", "",
             "| stage | rows in | rows out | error rows | seconds | reasons |", "|---|---|---|---|---|---|"]
    for row in report["stages"]:
        reasons = "; ".join(f"{kind}: {count}" for kind, count in row["reasons"].items()) or "-"
        lines.append(f"| {row['stage']} | {row['rows_in']} | {row['rows_out']} | {row['error_rows']} | "
                     f"{row['seconds']} | {reasons} |")
    records = report["records"]
    lines += ["", f"Records in: {records['records_in']}; non-deterministic: {records['non_deterministic']}; "
                  f"contaminated: {records['contaminated']}; duplicates: {records['duplicates']}.", ""]
    if report["tasks"]:
        lines += ["## Turns", "", "| task | rows | first turn right | revision fixed | final right | "
                  "first reply chars p10/p50/p90/p99/max |", "|---|---|---|---|---|---|"]
        for task, row in report["tasks"].items():
            fixed = "-" if row["revision_fix_rate"] is None else (
                f"{row['revised_correct']}/{row['first_wrong']} ({row['revision_fix_rate']:.1%})")
            chars = row["first_reply_chars"]
            shown = "/".join(str(chars[k]) for k in ("p10", "p50", "p90", "p99", "max")) if chars else "-"
            lines.append(f"| {task} | {row['rows']} | {row['first_correct']} ({row['first_pass_rate']:.1%}) | "
                         f"{fixed} | {row['final_correct']} ({row['final_pass_rate']:.1%}) | {shown} |")
        lines.append("")
    for task, rows in report["samples"].items():
        lines += [f"## Samples: {task}", ""]
        for row in rows:
            lines += [f"### {row['id']} ({row['status']})", "", "Turn 1:", "", _fenced(row["turn_1"])]
            if row["turn_2"]:
                lines += ["Feedback:", "", _fenced(row["feedback_1"]), "Turn 2:", "", _fenced(row["turn_2"])]
    return "\n".join(lines) + "\n"


def _fenced(text: str) -> str:
    clipped = text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "\n[... cut for the report]"
    return "````text\n" + clipped.replace("````", "'''") + "\n````\n"

