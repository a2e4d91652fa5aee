"""The verify stage over a JSONL file of replies.

Each row names its task (`output_prediction` or `input_prediction`), the
model's `response`, the recorded `output`, and for input prediction the
record's `refcode` (and `funcname`, default `main_solution`). Each row comes
out with a `verdict`; a row that cannot be verified comes out with an `error`
saying why. No row is dropped.
"""

from __future__ import annotations

from pathlib import Path

from codeio_jax.execution import Sandbox
from codeio_jax.records import INPUT_PREDICTION, OUTPUT_PREDICTION, TASKS, LineError, read_jsonl, write_jsonl
from codeio_jax.verify.verdicts import InputPrediction, verify_input_predictions, verify_output_prediction


def verify_file(source: str | Path, dest: str | Path, sandbox: Sandbox,
                reveal_expected: bool = False) -> dict[str, int]:
    """Verify every row of `source` into `dest`; returns counts by verdict status."""
    rows: list[dict] = []
    inputs: list[tuple[int, InputPrediction]] = []
    for item in read_jsonl(source):
        if isinstance(item, LineError):
            rows.append({"line": item.line, "error": item.reason})
            continue
        number, row = item
        problem = _problem(row)
        if problem:
            rows.append({"line": number, "id": row.get("id") if isinstance(row, dict) else None,
                         "error": problem})
            continue
        if row["task"] == OUTPUT_PREDICTION:
            verdict = verify_output_prediction(row["response"], row["output"], reveal_expected)
            rows.append({**row, "verdict": verdict.to_dict()})
        else:
            inputs.append((len(rows), InputPrediction(row["response"], row["refcode"], row["output"],
                                                      row.get("funcname", "main_solution"))))
            rows.append(row)
    verdicts = verify_input_predictions([item for _, item in inputs], sandbox)
    for (index, _), verdict in zip(inputs, verdicts):
        rows[index] = {**rows[index], "verdict": verdict.to_dict()}
    write_jsonl(dest, rows)
    counts: dict[str, int] = {}
    for row in rows:
        status = row["verdict"]["status"] if "verdict" in row else "invalid_row"
        counts[status] = counts.get(status, 0) + 1
    return counts


def _problem(row) -> str | None:
    if not isinstance(row, dict):
        return "expected a JSON object"
    if row.get("task") not in TASKS:
        return f"field `task` must be one of {list(TASKS)}, got {row.get('task')!r}"
    if not isinstance(row.get("response"), str):
        return "field `response` (the model's reply, a string) is missing"
    if "output" not in row:
        return "field `output` (the recorded output) is missing"
    if row["task"] == INPUT_PREDICTION:
        if not isinstance(row.get("refcode"), str):
            return "field `refcode` (the code to run the predicted input through) is missing"
        funcname = row.get("funcname", "main_solution")
        if not isinstance(funcname, str) or not funcname.isidentifier():
            return f"field `funcname` must be a Python identifier, got {funcname!r}"
    return None
