"""Evaluation on SeqIO eval tasks by generation: during training and standalone.

For each task (e.g. cruxeval_input / cruxeval_output, tasks/cruxeval.py) the
already tokenized `inputs` are completed by the sampler (greedy, up to
`max_new_tokens`, stopping at the vocabulary's EOS), decoded with the task's
vocabulary, postprocessed as the task says, and scored by the task's metric
functions: for CRUXEval that is running every answer in the sandbox, by the
benchmark's rules (execution-verified pass@1). This is what seqio's Evaluator
does, with our KV-cache sampler as the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import gin

from codeio_jax.models.config import ModelConfig


@gin.configurable
class SeqioEvaluator:
    """tasks: SeqIO task names; limit: examples per task (None: all);
    register: a function called once first (e.g. @register_cruxeval_tasks)."""

    def __init__(self, tasks: Sequence[str] = gin.REQUIRED, split: str = "test", limit: int | None = None,
                 max_new_tokens: int = 256, batch_size: int = 16, register: Callable[[], Any] | None = None):
        self.tasks, self.split, self.limit = list(tasks), split, limit
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self._register = register

    def __call__(self, config: ModelConfig, params, step: int = 0) -> dict[str, float]:
        import seqio

        from codeio_jax.sampling.sampler import Sampler

        if self._register is not None:
            self._register()
            self._register = None
        scores: dict[str, float] = {}
        for name in self.tasks:
            task = seqio.get_mixture_or_task(name)
            dataset = task.get_dataset(sequence_length=None, split=self.split, shuffle=False)
            examples = list(dataset.take(self.limit).as_numpy_iterator() if self.limit else
                            dataset.as_numpy_iterator())
            vocabulary = task.output_features["targets"].vocabulary
            longest = max(len(ex["inputs"]) for ex in examples) + self.max_new_tokens
            sampler = Sampler(config, params, max_length=longest)
            predictions = []
            for start in range(0, len(examples), self.batch_size):
                chunk = examples[start:start + self.batch_size]
                done = sampler.generate([ex["inputs"].tolist() for ex in chunk], self.max_new_tokens,
                                        stop_token_ids=[vocabulary.eos_id])
                predictions += [vocabulary.decode(c.tokens) for c in done]
            targets = [task.postprocess_fn(ex["targets_pretokenized"].decode(), example=ex, is_target=True)
                       for ex in examples]
            predicted = [task.postprocess_fn(text, example=ex, is_target=False)
                         for text, ex in zip(predictions, examples)]
            for metric in task.metric_fns:
                for key, value in metric(targets, predicted).items():
                    scores[f"eval/{name}/{key}"] = float(value)
        return scores


@gin.configurable
def evaluate(checkpoint: str | Path = gin.REQUIRED, evaluator: Callable = gin.REQUIRED,
             output: str | Path | None = None, compute_dtype: str = "float32") -> dict[str, float]:
    """Evaluate a model: a Hugging Face folder, a codeio-jax model checkpoint, or
    a training run's folder (its newest checkpoint). Writes `output` (JSON) when given."""
    config, params = load_any(checkpoint)
    scores = evaluator(config.replace(dtype=compute_dtype), params, 0)
    if output:
        Path(output).write_text(json.dumps({"checkpoint": str(checkpoint), **scores}, indent=2) + "\n")
    return scores


def load_any(folder: str | Path) -> tuple[ModelConfig, Any]:
    from codeio_jax.models import checkpoint, convert

    folder = Path(folder)
    if (folder / "config.json").exists():
        return convert.load_hf(folder)
    return checkpoint.load(folder)

