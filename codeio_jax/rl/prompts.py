"""What the policy is asked, with what its reward needs to verify an answer.

An `RLPrompt` is a chat plus the truth an answer is checked against: for output
prediction the recorded output; for input prediction the target output and the
record's code, which a predicted input is run through (the reward re-executes
it; it never compares with the input that was sampled).

Sources:
- `pipeline_prompts`: a pipeline run's prompts.jsonl, joined by record id with
  the records the prompts stage read (their code and function name);
- `one_line_functions` (rl/toy.py): a generated family whose answers are known
  by construction; its prompts carry a reference answer (`reference`), which a
  supervised warm-up may train on before GRPO. The pipeline's do not.

A row a reward could not be computed for (no messages, no output, an input
prediction whose record is missing) is an error row for that prompt, never a
prompt that would earn zero reward for reasons of its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import gin

from codeio_jax.records import INPUT_PREDICTION, TASKS, LineError, read_jsonl

# The stage outputs the prompts stage may have read, newest first (data/pipeline.py).
RECORD_FILES = ("deduplicated.jsonl", "decontaminated.jsonl", "with_ios.jsonl")


class PromptError(ValueError):
    """A prompt source that gives nothing to learn from, or that cannot be read."""


@dataclasses.dataclass(frozen=True)
class RLPrompt:
    id: str
    task: str
    messages: tuple[dict[str, str], ...]
    expected: Any  # the output an answer must give (both tasks)
    refcode: str = ""  # input prediction: the code a predicted input runs through
    funcname: str = "main_solution"
    reference: str | None = None  # a correct reply, where the source knows one

    @property
    def record_id(self) -> str:
        return self.id.rsplit("/", 2)[0]


@dataclasses.dataclass(frozen=True)
class PromptSet:
    prompts: tuple[RLPrompt, ...]
    errors: tuple[dict, ...] = ()  # {"id", "error"} per row that could not become a prompt

    def __len__(self) -> int:
        return len(self.prompts)


@gin.configurable
def pipeline_prompts(path: str | Path = gin.REQUIRED, records: str | Path | None = None,
                     tasks: Sequence[str] = TASKS, limit: int | None = None) -> PromptSet:
    """A pipeline run's prompts.jsonl (`path`: the file or the run's folder).
    records: the unified records the prompts were made from (default: the first
      of deduplicated.jsonl, decontaminated.jsonl, with_ios.jsonl beside it).
    tasks: which of output_prediction and input_prediction to keep.
    limit: keep the first `limit` prompts (after the task filter)."""
    path = Path(path)
    if path.is_dir():
        path = path / "prompts.jsonl"
    if not path.exists():
        raise PromptError(f"{path} does not exist: name a pipeline run's prompts.jsonl (or its folder)")
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise PromptError(f"tasks must name some of {list(TASKS)}, got {list(tasks)}")
    code = _record_code(_records_file(path, records))
    prompts, errors = [], []
    for item in read_jsonl(path):
        if isinstance(item, LineError):
            errors.append({"id": None, "error": f"{path} line {item.line}: {item.reason}"})
            continue
        line, row = item
        prompt, problem = _pipeline_prompt(row, code)
        if problem:
            errors.append({"id": row.get("record_id") if isinstance(row, dict) else None,
                           "error": f"{path} line {line}: {problem}"})
        elif prompt.task in tasks:
            prompts.append(prompt)
            if limit is not None and len(prompts) >= limit:
                break
    if not prompts:
        raise PromptError(f"{path} holds no usable prompt for the tasks {list(tasks)}"
                          + (f"; first problem: {errors[0]['error']}" if errors else ""))
    return PromptSet(tuple(prompts), tuple(errors))


def _records_file(prompts: Path, records: str | Path | None) -> Path:
    if records is not None:
        if not Path(records).exists():
            raise PromptError(f"{records} does not exist (pipeline_prompts.records)")
        return Path(records)
    for name in RECORD_FILES:
        if (prompts.parent / name).exists():
            return prompts.parent / name
    raise PromptError(f"no records beside {prompts} ({', '.join(RECORD_FILES)}): input prediction needs each "
                      "record's code; set pipeline_prompts.records")


def _record_code(path: Path) -> dict[str, tuple[str, str]]:
    """record id -> (refcode, funcname), from the rows that hold both."""
    code = {}
    for item in read_jsonl(path):
        if isinstance(item, LineError):
            continue
        _, row = item
        if isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("refcode"), str):
            code[row["id"]] = (row["refcode"], row.get("funcname") or "main_solution")
    return code


def _pipeline_prompt(row: Any, code: dict[str, tuple[str, str]]) -> tuple[RLPrompt | None, str | None]:
    if not isinstance(row, dict):
        return None, "expected a JSON object"
    record_id, task = row.get("record_id"), row.get("task")
    if not isinstance(record_id, str) or not record_id:
        return None, "field `record_id` is missing"
    if task not in TASKS:
        return None, f"field `task` must be one of {list(TASKS)}, got {task!r}"
    messages = row.get("messages")
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)):
        return None, "field `messages` must be a non-empty list of {role, content} messages"
    if "output" not in row:
        return None, "field `output` (what the answer is checked against) is missing"
    refcode, funcname = code.get(record_id, ("", "main_solution"))
    if task == INPUT_PREDICTION and not refcode:
        return None, f"record {record_id} is not among the records: its input predictions cannot be run"
    prompt_id = f"{record_id}/{task}/{row.get('pair_index', 0)}"
    return RLPrompt(prompt_id, task, tuple(dict(m) for m in messages), row["output"], refcode, funcname), None
