"""Each stage over a JSONL file: streamed in chunks, resumable (driver.py).

Every input line ends as output rows or as one error row that names its line,
its id when it has one, and the reason; a chunk goes to the teacher or the
sandbox at once, so their concurrency is used. The per-row logic lives in
predictions.py, transform.py and ios.py; this module only feeds it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import itertools
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from codeio_jax.data import predictions, transform
from codeio_jax.data.driver import Result, Summary, fingerprint, run_resumable
from codeio_jax.data.prompts import TransformParseError, parse_transform_reply
from codeio_jax.data.respond import Responder
from codeio_jax.execution import Sandbox
from codeio_jax.records import LineError, RecordError, foreign_format, read_jsonl
from codeio_jax.teachers.base import Teacher

Item = tuple[int, Any] | LineError
OnResult = Callable[[Result], None] | None

RELEASED_FIELDS = ("prompt", "turn_1", "feedback_1", "turn_2", "feedback_2")


def run_stage(source: str | Path, dest: str | Path, errors_dest: str | Path, stage: str,
              settings: dict, process: Callable[[list[tuple[int, Any]]], list[Result]],
              chunk: int = 64, on_result: OnResult = None) -> Summary:
    """Stream `source` through `process` (valid lines, a chunk at a time) into
    `dest` and `errors_dest`. `settings` are what the output depends on besides
    the input (they enter the fingerprint)."""

    def results_from(skip: int) -> Iterator[Result]:
        items = itertools.islice(read_jsonl(source), skip, None)
        # Two chunks in flight: while one chunk's last replies come in, the next
        # one's requests already keep the teacher or the sandbox busy.
        with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix=f"stage-{stage}") as pool:
            pending: collections.deque = collections.deque()
            while True:
                while len(pending) < 2 and (batch := list(itertools.islice(items, chunk))):
                    lines = [item for item in batch if not isinstance(item, LineError)]
                    pending.append((batch, pool.submit(process, lines) if lines else None))
                if not pending:
                    return
                batch, future = pending.popleft()
                processed = iter(future.result() if future else [])
                for item in batch:
                    if isinstance(item, LineError):
                        yield Result.error(unreadable(stage, item))
                    else:
                        yield next(processed)

    return run_resumable(dest, errors_dest, fingerprint(source, stage, sorted(settings.items())),
                         results_from, on_result)


def unreadable(stage: str, item: LineError) -> dict:
    """The error row of a line that holds no row to work on."""
    return {"stage": stage, "line": item.line, "id": item.id, **item.location(), "error": item.reason}


def error(stage: str, line: int, item: Any, reason: str, row_id: str | None = None, **extra) -> Result:
    if row_id is None and isinstance(item, dict):
        row_id = item.get("id")
    return Result.error({"stage": stage, "line": line, "id": row_id, "error": reason, **extra})


def transform_batch(lines: list[tuple[int, Any]], teacher: Teacher) -> list[Result]:
    """The transform stage on (line, raw row) items: one teacher call for the lot."""
    results: list[Result | None] = []
    asks = []
    for line, row in lines:
        try:
            row_id, code = transform.raw_code(row)
        except ValueError as exc:
            results.append(error("transform", line, row, str(exc)))
            continue
        asks.append((len(results), line, row, row_id, transform.request(code)))
        results.append(None)
    replies = teacher.reply([ask[-1] for ask in asks])
    for (index, line, row, row_id, _), reply in zip(asks, replies):
        if not reply.ok:
            results[index] = error("transform", line, row, f"the teacher failed: {reply.error}", row_id)
            continue
        try:
            fields = parse_transform_reply(reply.text)
        except TransformParseError as exc:
            results[index] = error("transform", line, row, f"unusable reply: {exc}", row_id, reply=reply.text)
            continue
        results[index] = Result.one(True, transform.unified_row(row_id, fields, row))
    return results


def transform_file(source, dest, errors_dest, teacher: Teacher, teacher_id: str, chunk: int = 64,
                   on_result: OnResult = None) -> Summary:
    return run_stage(source, dest, errors_dest, "transform", {"teacher": teacher_id},
                     lambda lines: transform_batch(lines, teacher), chunk, on_result)


def prompts_file(source, dest, errors_dest, seed: int = 0, per_task: int = 3,
                 on_result: OnResult = None) -> Summary:
    def process(lines):
        results = []
        for line, row in lines:
            try:
                results.append(Result(True, tuple(predictions.prompt_rows(row, seed, per_task))))
            except RecordError as exc:
                results.append(error("prompts", line, row, str(exc)))
        return results

    return run_stage(source, dest, errors_dest, "prompts", {"seed": seed, "per_task": per_task},
                     process, on_result=on_result)


def respond_file(source, dest, errors_dest, responder: Responder, turn: int, teacher_id: str,
                 on_result: OnResult = None) -> Summary:
    """Answer turn `turn` of every row that wants it (predictions.wants_turn);
    other rows pass through. A row whose first answer failed becomes an error
    row holding the whole row; a failed revision keeps the row as it was, with
    the failure noted in `revision_errors`."""
    stage = f"respond_{turn}"

    def process(lines):
        results: list[Result | None] = []
        asks = []
        for line, row in lines:
            problem = predictions.check_row(row)
            if problem:
                results.append(error(stage, line, row, problem))
            elif predictions.wants_turn(row, turn):
                asks.append((len(results), line, row))
                results.append(None)
            else:
                results.append(Result.one(True, row))
        replies = responder.reply([row for _, _, row in asks]) if asks else []
        for (index, line, row), reply in zip(asks, replies):
            if reply.ok:
                results[index] = Result.one(True, predictions.with_reply(row, reply, responder.name))
            elif turn == 1:
                results[index] = error(stage, line, row, f"the teacher failed: {reply.error}", row=row)
            else:
                noted = {**row, "revision_errors": [*row.get("revision_errors", []),
                                                    {"turn": turn, "error": reply.error}]}
                results[index] = Result.one(True, noted)
        return results

    return run_stage(source, dest, errors_dest, stage, {"turn": turn, "teacher": teacher_id}, process,
                     responder.batch_size, on_result)


def verify_file(source, dest, errors_dest, sandbox: Sandbox, reveal_expected: bool = False,
                timeout_s: float = 20.0, chunk: int = 64, on_result: OnResult = None) -> Summary:
    def process(lines):
        results: list[Result | None] = []
        valid = []
        for line, row in lines:
            problem = predictions.check_row(row)
            if problem:
                results.append(error("verify", line, row, problem))
            else:
                valid.append((len(results), row))
                results.append(None)
        verified = predictions.verify_rows([row for _, row in valid], sandbox, reveal_expected, timeout_s)
        for (index, _), row in zip(valid, verified):
            results[index] = Result.one(True, row)
        return results

    return run_stage(source, dest, errors_dest, "verify", {"reveal_expected": reveal_expected,
                                                           "timeout_s": timeout_s}, process,
                     chunk, on_result)


def decontaminate_file(source, dest, errors_dest, index, on_result: OnResult = None) -> Summary:
    """Records whose code overlaps no benchmark program (data/decontaminate.py);
    the others become error rows naming the benchmark item and the shared span."""
    from codeio_jax.data import decontaminate

    def process(lines):
        return [decontaminated(line, row, index) for line, row in lines]

    return run_stage(source, dest, errors_dest, decontaminate.STAGE, {"index": index.fingerprint}, process,
                     on_result=on_result)


def decontaminated(line: int, row: Any, index) -> Result:
    """One record through the decontamination index: itself, or its error row."""
    from codeio_jax.data import decontaminate

    code = row.get("refcode") if isinstance(row, dict) else None
    if not isinstance(code, str):
        return error(decontaminate.STAGE, line, row, "no `refcode` text to check")
    try:
        hit = index.check(code)
    except decontaminate.CodeTokenError as exc:
        return error(decontaminate.STAGE, line, row, str(exc))
    if hit is None:
        return Result.one(True, row)
    return error(decontaminate.STAGE, line, row, hit.reason(index.n), benchmark=hit.benchmark,
                 benchmark_item=hit.item, match=hit.match, span=hit.span)


def dedup_file(source, dest, errors_dest, settings, on_result: OnResult = None) -> Summary:
    """One record per program (data/dedup.py): a first pass signs every record
    and decides, the second keeps the earliest of each set of copies and turns
    the others into error rows naming it. The decision needs the whole file, so
    a resumed stage signs it again (the cheapest stage there is)."""
    from codeio_jax.data import dedup

    decision: dict[str, Any] = {}
    deciding = threading.Lock()

    def decided() -> dict:
        with deciding:  # run_stage's two threads: the first one decides
            if not decision:
                signatures, failed = {}, {}
                for item in read_jsonl(source):
                    if isinstance(item, LineError):
                        continue
                    line, row = item
                    try:
                        signatures[line] = dedup.signature(line, row, settings)
                    except dedup.DedupError as exc:
                        failed[line] = str(exc)
                decision.update(signatures=signatures, failed=failed,
                                dropped=dedup.decide(signatures.values(), settings))
        return decision

    def process(lines):
        found = decided()
        keys = {line: sig.key for line, sig in found["signatures"].items()}
        return [deduplicated(line, row, keys.get(line), found["dropped"], settings, found["failed"].get(line))
                for line, row in lines]

    return run_stage(source, dest, errors_dest, dedup.STAGE, dedup_settings(settings), process, on_result=on_result)


def dedup_settings(settings) -> dict:
    return {"dedup": sorted(settings.as_dict().items())}


def deduplicated(line: int, row: Any, key: tuple | None, dropped: dict, settings,
                 failure: str | None = None) -> Result:
    """One record (its signature's key; None: it has none) after the decision:
    itself, or the error row naming its copy."""
    from codeio_jax.data import dedup

    if key is None:
        return error(dedup.STAGE, line, row, f"cannot be compared: {failure}")
    link = dropped.get(key)
    if link is None:
        return Result.one(True, row)
    kept = dedup.kept_for(link, dropped)
    return error(dedup.STAGE, line, row, dedup.reason(link, kept, settings), **dedup.error_fields(link, kept))


def assemble_file(source, dest, errors_dest, on_result: OnResult = None) -> Summary:
    def process(lines):
        results = []
        for line, row in lines:
            problem = predictions.check_row(row)
            results.append(error("assemble", line, row, problem) if problem
                           else Result.one(True, predictions.assemble_row(row)))
        return results

    return run_stage(source, dest, errors_dest, "assemble", {}, process, on_result=on_result)


def import_file(source, dest, errors_dest, on_result: OnResult = None) -> Summary:
    """Rows of the released CodeIO-PyEdu-Reasoning shape, as assembled examples:
    their fields unchanged, plus what our examples carry (an id from their
    content, the task read from the prompt, status `imported`)."""
    def process(lines):
        return [imported(line, row) for line, row in lines]

    return run_stage(source, dest, errors_dest, "import", {}, process, on_result=on_result)


def imported(line: int, row: Any) -> Result:
    """The import stage on one released row."""
    if not isinstance(row, dict):
        return error("import", line, row, "expected a JSON object")
    foreign = foreign_format(row, "released")
    if foreign:
        return error("import", line, row, foreign)
    for name in RELEASED_FIELDS:
        value = row.get(name)
        if name in ("prompt", "turn_1") and not isinstance(value, str):
            return error("import", line, row, f"field `{name}` (a string) is missing")
        if value is not None and not isinstance(value, str):
            return error("import", line, row, f"field `{name}` must be a string or null")
    task = row.get("task") or _task_of(row["prompt"])
    if task is None:
        return error("import", line, row, "the prompt asks for neither an output nor an input")
    example = {name: row.get(name) or "" for name in RELEASED_FIELDS}
    turns = 1 + bool(example["turn_2"])
    return Result.one(True, {**row, **example, "id": row.get("id") or _content_id(example),
                             "record_id": row.get("record_id", ""), "task": task,
                             "status": row.get("status", "imported"), "turns": row.get("turns", turns),
                             "system": row.get("system", ""), "input": row.get("input"),
                             "output": row.get("output"), "refcode": row.get("refcode", ""),
                             "funcname": row.get("funcname", "")})


def _task_of(prompt: str) -> str | None:
    """The task a released prompt asks for: whichever answer form it names last."""
    output_at, input_at = prompt.rfind('{"output"'), prompt.rfind('{"input"')
    if output_at == input_at == -1:
        return None
    return predictions.OUTPUT_PREDICTION if output_at > input_at else predictions.INPUT_PREDICTION


def _content_id(example: dict) -> str:
    digest = hashlib.sha256("\0".join(example[name] for name in RELEASED_FIELDS).encode(
        "utf-8", "surrogatepass"))
    return "imp_" + digest.hexdigest()[:16]


def read_rows(path: str | Path) -> Iterator[dict]:
    """The rows of a JSONL file a stage of ours wrote; a bad line here means the
    file was damaged after the fact, which is an error, not a row to skip."""
    for item in read_jsonl(path):
        if isinstance(item, LineError):
            raise ValueError(f"{path} line {item.line}: {item.reason}")
        yield item[1]
