"""A recipe that learns on CPU in minutes: a generated family of one-line
functions and a byte-level tokenizer for a tiny model.

The functions return one of their arguments, so the answer is a copy from the
right place: a two-layer model learns it in minutes, and the reward still comes
from the verifier (an input prediction is run through the function). The
reference replies can come from a teacher that is sometimes wrong
(`teacher_accuracy`), as an unverified teacher's are: a warm-up on them teaches
the format and the mistakes, and leaves GRPO something the verified reward can
fix (gin/rl/toy_cpu.gin, benchmarks/rl_toy.py).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Sequence

import gin

from codeio_jax.records import OUTPUT_PREDICTION, TASKS
from codeio_jax.rl.prompts import PromptError, PromptSet, RLPrompt

_NAMES = "abcdefghjkmnpqrstuvwxyz"  # single letters, l and o left out (they read as 1 and 0)
# A system message of its own: without one, ChatML's default (Qwen's, 70 characters)
# would be most of every prompt, and every copy would have to look past it.
SYSTEM = "Answer in JSON."


@gin.configurable
def one_line_functions(count: int = 256, seed: int = 0, tasks: Sequence[str] = TASKS,
                       heldout: bool = False, arguments: int = 1, teacher_accuracy: float = 1.0) -> PromptSet:
    """`count` prompts about functions `def f(<arguments>): return <one of them>`,
    the argument names distinct letters and their values distinct digits:
    output prediction asks what a call returns, input prediction asks for
    arguments that make f return a target digit. With one argument (the
    default) the answer is a copy from a fixed place, which a two-layer model
    learns in minutes; more arguments add the choice of which one.
    heldout: draw from the fifth of the family (by a hash of the function and its
    arguments) that the training prompts never hold.
    teacher_accuracy: the share of prompts whose `reference` (the reply a
      warm-up trains on) is right; the others' name a wrong digit, as an
      unverified teacher's would. The reward never reads it: it verifies."""
    if count < 1:
        raise PromptError(f"count must be at least 1, got {count}")
    if not 0.0 <= teacher_accuracy <= 1.0:
        raise PromptError(f"teacher_accuracy must be between 0 and 1, got {teacher_accuracy}")
    if not 1 <= arguments <= 10:
        raise PromptError(f"arguments must be 1 to 10 (their values are distinct digits), got {arguments}")
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise PromptError(f"tasks must name some of {list(TASKS)}, got {list(tasks)}")
    rng = random.Random(seed)
    prompts = []
    for index in range(count):
        task = tasks[index % len(tasks)]
        while True:
            names = rng.sample(_NAMES, arguments)
            returned = rng.choice(names)
            values = dict(zip(names, rng.sample(range(10), arguments)))
            if _is_heldout(task, returned, values) == heldout:
                break
        refcode = f"def f({', '.join(names)}):\n    return {returned}\n"
        call = ", ".join(f"{name}={value}" for name, value in values.items())
        taught = dict(values)
        if rng.random() >= teacher_accuracy:  # the teacher's answer is another digit
            taught[returned] = (values[returned] + rng.randrange(1, 10)) % 10
        if task == OUTPUT_PREDICTION:
            question = f"{refcode}What does f({call}) return?"
            reference = json.dumps({"output": taught[returned]})
        else:
            question = f"{refcode}Give arguments for which f returns {values[returned]}."
            reference = json.dumps({"input": taught})
        prompt_id = f"{'heldout' if heldout else 'f'}{seed}-{index}/{task}/0"
        messages = ({"role": "system", "content": SYSTEM}, {"role": "user", "content": question})
        prompts.append(RLPrompt(prompt_id, task, messages, values[returned], refcode, "f", reference))
    return PromptSet(tuple(prompts))


def _is_heldout(task: str, returned: str, values: dict) -> bool:
    key = json.dumps([task, returned, values], sort_keys=True).encode()
    return hashlib.sha256(key).digest()[0] % 5 == 0


@gin.configurable
def byte_tokenizer(folder: str | Path = gin.REQUIRED) -> Path:
    """A byte-level tokenizer with no merges (every character one token, 256 of
    them) and ChatML's special tokens, written into `folder` (the rl.tokenizer
    of a tiny model: single-character digits make copying learnable)."""
    from tasks.tokenizer_training import train_bpe

    alphabet = 256 + 3  # the bytes and ChatML's three special tokens: no room for a merge
    train_bpe(["0123456789"], folder, family="qwen2", vocab_size=alphabet)
    return Path(folder)
