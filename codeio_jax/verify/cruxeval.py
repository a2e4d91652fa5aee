"""CRUXEval scoring, by the benchmark's official rules.

A generation is checked by running the sample's code followed by the line
`assert <output> == <generation>` under a 3 s limit; it passes when that program
runs cleanly. Before scoring, generations that would test nothing are dropped:
for output prediction one whose text contains `f(<input>)`, for input prediction
one whose text lacks `f(`. Dropped generations do not count in n, and a sample
none of whose generations passes counts as all failures over all of its
generations. pass@k is averaged over samples, in percent.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from codeio_jax.execution import Check, Limits, Outcome, Sandbox, skipped
from codeio_jax.verify.batching import batch_program, code_is_self_contained, data_only_key
from codeio_jax.verify.passk import pass_at_k

MODES = ("input", "output")
TIMEOUT_S = 3.0
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cruxeval" / "cruxeval.jsonl"


class ScoringError(ValueError):
    """Generations or data that cannot be scored, with what to fix."""


@dataclasses.dataclass(frozen=True)
class Sample:
    id: str
    code: str
    input: str
    output: str


def load_samples(path: str | Path = DEFAULT_DATA) -> dict[str, Sample]:
    path = Path(path)
    if not path.exists():
        raise ScoringError(f"CRUXEval data not found at {path}; pass its path with --data")
    samples = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                samples[row["id"]] = Sample(row["id"], row["code"], row["input"], row["output"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ScoringError(f"{path} line {number}: not a CRUXEval sample ({exc})") from None
    return samples


def validate_generations(generations: object, samples: dict[str, Sample]) -> dict[str, list[str]]:
    """CRUXEval's generation format: {"sample_N": [str, ...], ...}, any subset."""
    if not isinstance(generations, dict):
        raise ScoringError("generations must be a JSON object from sample id to a list of strings")
    for sample_id, gens in generations.items():
        if sample_id not in samples:
            raise ScoringError(f"generations name {sample_id!r}, which is not a CRUXEval sample")
        if not isinstance(gens, list) or not all(isinstance(g, str) for g in gens):
            raise ScoringError(f"generations[{sample_id!r}] must be a list of strings")
        if not gens:
            raise ScoringError(f"generations[{sample_id!r}] is empty")
    return generations


def is_dropped(mode: str, sample: Sample, generation: str) -> bool:
    if mode == "input":
        return "f(" not in generation
    return f"f({sample.input})" in generation


def assert_line(sample: Sample, generation: str) -> str:
    return f"assert {sample.output} == {generation}"


@dataclasses.dataclass
class ScoreReport:
    raw_generations: dict[str, list[str]]
    raw_scored_generations: dict[str, list[bool]]
    statuses: dict[str, list[str]]
    pass_at_1: float
    pass_at_5: float
    batched_checks: int = 0
    messages: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"raw_generations": self.raw_generations,
                "raw_scored_generations": self.raw_scored_generations,
                "statuses": self.statuses, "pass_at_1": self.pass_at_1, "pass_at_5": self.pass_at_5}


def score(generations: dict[str, list[str]], mode: str, samples: dict[str, Sample], sandbox: Sandbox,
          timeout_s: float = TIMEOUT_S, batch: bool = True, batch_size: int = 32,
          on_progress: Callable[[str, int], None] | None = None) -> ScoreReport:
    """Score `generations` for `mode` ("input" or "output").

    batch: run data-only checks `batch_size` to a child, each distinct program
      once (see batching.py); off, every check gets a fresh child.
    on_progress: called with (status, number of generations) as checks finish."""
    if mode not in MODES:
        raise ScoringError(f"mode must be one of {MODES}, got {mode!r}")
    validate_generations(generations, samples)
    limits = dataclasses.replace(sandbox.config.limits, timeout_s=timeout_s)
    outcomes: dict[str, list[Outcome | None]] = {}
    # A unit is one program and the generations it stands for: (sample id,
    # indices of that sample's generations that are this same program, line).
    data_units: list[tuple[str, list[int], str]] = []
    isolated: list[tuple[str, list[int], object]] = []
    for sample_id, gens in generations.items():
        sample = samples[sample_id]
        slots: list[Outcome | None] = [None] * len(gens)
        outcomes[sample_id] = slots
        lines = {}
        for i, gen in enumerate(gens):
            if is_dropped(mode, sample, gen):
                slots[i] = skipped("dropped by CRUXEval's rule: the generation tests nothing")
            else:
                lines[i] = assert_line(sample, gen)
        groups: dict[str, list[int]] = {}
        if batch and code_is_self_contained(sample.code):
            for i, line in lines.items():
                key = data_only_key(line, mode)
                if key is not None:
                    groups.setdefault(key, []).append(i)
        for group in groups.values():
            data_units.append((sample_id, group, lines[group[0]]))
        in_groups = {i for g in groups.values() for i in g}
        for i, line in lines.items():
            if i not in in_groups:
                isolated.append((sample_id, [i], _submit_one(sandbox, sample, line, limits)))

    batches = []
    for start in range(0, len(data_units), batch_size):
        units = data_units[start:start + batch_size]
        program = batch_program([(samples[sid].code, line) for sid, _, line in units], timeout_s)
        batch_limits = dataclasses.replace(limits, timeout_s=timeout_s * len(units) + 1.0)
        batches.append((units, sandbox.submit(Check(program, entry="__codeio_batch__", limits=batch_limits))))

    batched = 0
    for units, future in batches:
        outcome = future.result()
        results = outcome.value if outcome.passed else None
        if not (isinstance(results, list) and len(results) == len(units)):
            # The batch did not finish cleanly: give each program its own child.
            for sample_id, group, line in units:
                isolated.append((sample_id, group, _submit_one(sandbox, samples[sample_id], line, limits)))
            continue
        for (sample_id, group, _), (status, message) in zip(units, results):
            for i in group:
                outcomes[sample_id][i] = Outcome(status=status, message=message)
            batched += len(group)
            if on_progress:
                on_progress(status, len(group))
    for sample_id, group, future in isolated:
        outcome = future.result()
        for i in group:
            outcomes[sample_id][i] = outcome
        if on_progress:
            on_progress(outcome.status, len(group))
    return _report(generations, outcomes, batched)


def _submit_one(sandbox: Sandbox, sample: Sample, line: str, limits: Limits):
    source = f"{sample.code}\n{line}"
    return sandbox.submit(Check(source, assert_line=sample.code.count("\n") + 2, limits=limits))


def _report(generations, outcomes, batched) -> ScoreReport:
    scored, statuses, messages, p1, p5 = {}, {}, {}, [], []
    for sample_id, gens in generations.items():
        results = outcomes[sample_id]
        statuses[sample_id] = [o.status for o in results]
        messages[sample_id] = [o.message for o in results]
        executed = [o.passed for o in results if o.status != "skipped"]
        if True not in executed:
            executed = [False] * len(gens)
        scored[sample_id] = executed
        n, c = len(executed), sum(executed)
        p1.append(pass_at_k(n, c, 1))
        p5.append(pass_at_k(n, c, 5))
    count = max(1, len(generations))
    return ScoreReport(raw_generations=generations, raw_scored_generations=scored, statuses=statuses,
                       pass_at_1=100.0 * sum(p1) / count, pass_at_5=100.0 * sum(p5) / count,
                       batched_checks=batched, messages=messages)
