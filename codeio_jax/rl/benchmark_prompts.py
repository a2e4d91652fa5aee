"""CRUXEval's samples as GRPO prompts, asked and scored the benchmark's way.

Each sample gives an output-prediction and an input-prediction prompt in
CRUXEval's own format (verify/cruxeval_prompts.py: a completed assertion
between [ANSWER] and [/ANSWER]). They are scored by CRUXEval's rule, made
strict for RL (`scoring="cruxeval"`, rewards.py): only an answer that is data
is executed. Their reference is the true completed assertion.

A sample whose own answer the strict rule would refuse (CRUXEval has a few
input predictions whose input is a lambda, a call or a name of the code, such
as `range(100, 120)`) is an error row for that prompt: no answer to it could be
shown correct by data alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import gin

from codeio_jax.records import OUTPUT_PREDICTION, TASKS
from codeio_jax.rl.prompts import CRUXEVAL, PromptError, PromptSet, RLPrompt, check_tasks
from codeio_jax.rl.rewards import CRUXEVAL_MODES, refused_generation
from codeio_jax.verify import cruxeval_prompts as chat
from codeio_jax.verify.cruxeval import DEFAULT_DATA, Sample, ScoringError, load_samples


@gin.configurable
def cruxeval_prompts(path: str | Path = DEFAULT_DATA, tasks: Sequence[str] = TASKS,
                     ids: Sequence[str] | None = None, limit: int | None = None) -> PromptSet:
    """CRUXEval's samples (`path`: its cruxeval.jsonl), sample by sample in the
    file's order, each as one prompt per task.
    tasks: which of output_prediction and input_prediction to ask.
    ids: the samples to keep (`sample_N`; default all).
    limit: keep the first `limit` prompts (after the other filters)."""
    path = Path(path)
    if not path.exists():
        raise PromptError(f"{path} does not exist: name CRUXEval's cruxeval.jsonl (cruxeval_prompts.path)")
    check_tasks(tasks)
    try:
        samples = load_samples(path)
    except ScoringError as exc:
        raise PromptError(f"{exc}; fix or replace the file (cruxeval_prompts.path)") from None
    if ids is not None:
        if isinstance(ids, str):
            raise PromptError(f"cruxeval_prompts.ids must be a list of sample ids, got the string {ids!r}")
        unknown = [sample_id for sample_id in ids if sample_id not in samples]
        if unknown:
            raise PromptError(f"cruxeval_prompts.ids names samples {path} does not hold: {unknown[:5]}")
        wanted = set(ids)
        samples = {sample_id: sample for sample_id, sample in samples.items() if sample_id in wanted}
    prompts, errors = [], []
    for sample in samples.values():
        for task in (task for task in TASKS if task in tasks):
            prompt = _prompt(sample, task)
            answer = _generation(sample, task)
            refused = refused_generation(CRUXEVAL_MODES[task], sample, answer)
            if refused:
                errors.append({"id": prompt.id, "error": f"{path}: {sample.id} {task}: its own answer `{answer}` "
                                                         f"is {refused}"})
                continue
            prompts.append(prompt)
            if limit is not None and len(prompts) >= limit:
                return PromptSet(tuple(prompts), tuple(errors))
    if not prompts:
        raise PromptError(f"{path} holds no usable prompt for the tasks {list(tasks)}"
                          + (f"; first problem: {errors[0]['error']}" if errors else ""))
    return PromptSet(tuple(prompts), tuple(errors))


def _generation(sample: Sample, task: str) -> str:
    """The true answer, as CRUXEval's scorer takes it."""
    return sample.output if task == OUTPUT_PREDICTION else f"f({sample.input})"


def _prompt(sample: Sample, task: str) -> RLPrompt:
    mode = CRUXEVAL_MODES[task]
    messages = tuple(chat.messages(mode, sample.code, sample.input, sample.output))
    reference = f"[ANSWER]assert f({sample.input}) == {sample.output}[/ANSWER]"
    return RLPrompt(f"{sample.id}/{task}/0", task, messages, sample.output, sample.code, "f", reference,
                    scoring=CRUXEVAL, input=sample.input)

