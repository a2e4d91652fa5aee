"""What the policy is asked, with what its reward needs to verify an answer.

An `RLPrompt` is a chat plus the truth an answer is checked against: for output
prediction the recorded output; for input prediction the target output and the
record's code, which a predicted input is run through (the reward re-executes
it; it never compares with the input that was sampled). A CRUXEval prompt holds
its sample as Python source text: `expected` its output, `refcode` its code,
`input` its input.

Sources:
- `pipeline_prompts`: a pipeline run's prompts.jsonl, joined by record id with
  the records the prompts stage read (their code and function name);
- `shard_prompts`: the assembled examples of a pipeline run's TFRecord shards
  (codeio_examples.tfrecord-*), which carry their code; an example verified
  correct brings its verified reply as the prompt's reference;
- `cruxeval_prompts` (rl/benchmark_prompts.py): CRUXEval's samples in its own
  prompt format, scored by its own rule (`scoring="cruxeval"`, rewards.py);
- `one_line_functions` (rl/toy.py): a generated family whose answers are known
  by construction.
A prompt's `reference` is a correct reply where the source knows one, which a
supervised warm-up may train on before GRPO; prompts.jsonl carries none.

A row a reward could not be computed for (no messages, no output, an input
prediction whose record is missing) is an error row for that prompt, never a
prompt that would earn zero reward for reasons of its own.
"""

from __future__ import annotations

import dataclasses
import glob
import re
import struct
from pathlib import Path
from typing import Any, Sequence

import gin

from codeio_jax.data.shards import EXAMPLES
from codeio_jax.data.tfrecords import CorruptRecordError, decode_row, read_records
from codeio_jax.records import INPUT_PREDICTION, TASKS, LineError, read_jsonl
from codeio_jax.verify.verdicts import CORRECT

# The stage outputs the prompts stage may have read, newest first (data/pipeline.py).
RECORD_FILES = ("deduplicated.jsonl", "decontaminated.jsonl", "with_ios.jsonl")
# How an answer is verified: the pipeline's verifier (verify/verdicts.py), or
# CRUXEval's rule (verify/cruxeval.py), made strict for RL (rewards.py).
CODEIO, CRUXEVAL = "codeio", "cruxeval"
SCORINGS = (CODEIO, CRUXEVAL)
# The example shards of a pipeline run (data/shards.py), in its work folder's tfrecords/.
SHARD_PATTERN = f"{EXAMPLES}.tfrecord-*"
SHARDS_FOLDER = "tfrecords"


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
    scoring: str = CODEIO  # how an answer is verified: one of SCORINGS (rewards.py)
    input: str = ""  # cruxeval: the sample's input as Python source (its rule reads it)

    def __post_init__(self):
        if self.scoring not in SCORINGS:
            raise PromptError(f"prompt {self.id}: scoring must be one of {list(SCORINGS)}, got {self.scoring!r}")
        if self.scoring == CRUXEVAL and not all(isinstance(value, str) for value in (
                self.expected, self.refcode, self.input)):
            raise PromptError(f"prompt {self.id}: a CRUXEval prompt's expected, refcode and input are Python "
                              "source text (str)")

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
    check_tasks(tasks)
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


def check_tasks(tasks: Sequence[str]) -> None:
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise PromptError(f"tasks must name some of {list(TASKS)}, got {list(tasks)}")


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


@gin.configurable
def shard_prompts(path: str | Path = gin.REQUIRED, tasks: Sequence[str] = TASKS,
                  limit: int | None = None) -> PromptSet:
    """The assembled examples of a pipeline run's TFRecord shards.
    path: a folder holding the shards (a run's work folder or its tfrecords/),
      one shard file, or a glob of shard files.
    tasks: which of output_prediction and input_prediction to keep.
    limit: keep the first `limit` prompts (after the task filter).

    An example whose status is correct brings its last turn, the one that was
    verified (a status is its last turn's verdict), as the reference: turn_1,
    or after a revision turn_2. That one answered the prompt, the wrong first
    answer and its feedback; a warm-up trains on it as a reply to the prompt
    alone, so its words may speak of an attempt the prompt does not show. The
    shards hold two turns: a third-round answer is not there, and such an
    example has no reference."""
    files = _shard_files(Path(path) if not glob.has_magic(str(path)) else str(path))
    check_tasks(tasks)
    prompts, errors, seen = [], [], set()
    for file in files:
        try:
            for number, data in enumerate(read_records(file)):
                where = f"{file} record {number}"
                try:
                    row = decode_row(data)
                except (ValueError, AttributeError, struct.error) as exc:  # a record of another schema or writer
                    errors.append({"id": None, "error": f"{where}: not an assembled example ({exc})"})
                    continue
                prompt, problem = _shard_prompt(row)
                if prompt is not None and prompt.id in seen:
                    problem = f"example {row['id']} appears twice in the shards"
                if problem:
                    errors.append({"id": row.get("id") or None, "error": f"{where}: {problem}"})
                elif prompt.task in tasks:
                    seen.add(prompt.id)
                    prompts.append(prompt)
                    if limit is not None and len(prompts) >= limit:
                        return PromptSet(tuple(prompts), tuple(errors))
        except CorruptRecordError as exc:
            # Past a bad frame nothing in the file can be read: taking the rest of the set
            # would lose the shard's remaining examples without a record of which.
            raise PromptError(f"{exc}: this shard is damaged; write the shards again (codeio-jax data "
                              "write, or rerun the pipeline)") from None
    if not prompts:
        raise PromptError(f"the shards {', '.join(map(str, files))} hold no usable prompt for the tasks "
                          f"{list(tasks)}" + (f"; first problem: {errors[0]['error']}" if errors else ""))
    return PromptSet(tuple(prompts), tuple(errors))


_SHARD_NAME = re.compile(r"-(\d{5})-of-(\d{5})$")


def _shard_files(path: Path | str) -> list[Path]:
    """The shard files `path` names; a folder's must make one whole set."""
    if isinstance(path, str):  # a glob: the files the user chose
        files = sorted(Path(name) for name in glob.glob(path) if Path(name).is_file())
        if not files:
            raise PromptError(f"no file matches {path} (shard_prompts.path)")
        return files
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PromptError(f"{path} does not exist: name a pipeline run's folder, its {SHARDS_FOLDER}/ folder, "
                          "a shard file or a glob of them (shard_prompts.path)")
    for folder in (path, path / SHARDS_FOLDER):
        files = sorted(folder.glob(SHARD_PATTERN))
        if files:
            break
    else:
        raise PromptError(f"no TFRecord shards in {path} (looked for {SHARD_PATTERN} there and in "
                          f"{path / SHARDS_FOLDER}); the pipeline's write stage makes them")
    counts = {match.group(2) if match else None for match in map(_SHARD_NAME.search, map(str, files))}
    expected = {f"{folder / EXAMPLES}.tfrecord-{shard:05d}-of-{count}" for count in counts if count
                for shard in range(int(count))}
    if None in counts or len(counts) != 1 or expected != set(map(str, files)):
        raise PromptError(f"the shards in {folder} do not make one whole set ({', '.join(f.name for f in files)}); "
                          "write them again, or name the files to read with a glob")
    return files


def _shard_prompt(row: dict) -> tuple[RLPrompt | None, str | None]:
    """An assembled example (predictions.assemble_row) as a prompt, or what keeps it from being one."""
    example_id, record_id, task = row["id"], row["record_id"], row["task"]
    if task not in TASKS:
        return None, f"field `task` must be one of {list(TASKS)}, got {task!r}"
    if not row["prompt"]:
        return None, "field `prompt` is empty"
    if not row["refcode"] and row["output"] is None:
        return None, ("no `output` and no `refcode` (an imported released row?): nothing to check an answer "
                      "against")
    if task == INPUT_PREDICTION and not row["refcode"]:
        return None, "an input prediction without `refcode`: a predicted input cannot be run"
    head, _, pair = example_id.rpartition(":")
    if not record_id or head != f"{record_id}:{task}" or not pair.isdigit():
        return None, (f"field `id` is {example_id!r}, not `<record_id>:<task>:<pair index>` as the pipeline "
                      "writes it")
    messages = ([{"role": "system", "content": row["system"]}] if row["system"] else []) + [
        {"role": "user", "content": row["prompt"]}]
    reference = row.get(f"turn_{row['turns']}") if row["status"] == CORRECT else None
    return RLPrompt(f"{record_id}/{task}/{pair}", task, tuple(messages), row["output"], row["refcode"],
                    row["funcname"] or "main_solution", reference or None), None
