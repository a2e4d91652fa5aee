"""CRUXEval-O and -I for a Hugging Face model folder: greedy replies from our
sampler (the local teacher, in the folder's own chat template), the generation
read from each reply, scored by execution in the sandbox."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path


@dataclasses.dataclass
class CruxevalResult:
    scores: dict[str, float]  # "CRUXEval-O" / "CRUXEval-I" -> pass@1 (percent)
    samples: int  # per mode
    first_replies: dict[str, str]  # mode -> the reply to the first sample
    completion_tokens: int
    seconds: float


def sample_number(sample_id: str) -> int:
    return int(sample_id.rsplit("_", 1)[-1])


def evaluate_cruxeval(folder: str | Path, limit: int | None = None, max_new_tokens: int = 128,
                      batch_size: int = 8) -> CruxevalResult:
    """pass@1 on the first `limit` samples by id of each mode (None: all 800)."""
    from codeio_jax.execution import Limits, Sandbox, SandboxConfig
    from codeio_jax.teachers.local import LocalTeacher
    from codeio_jax.verify import cruxeval, cruxeval_prompts

    samples = cruxeval.load_samples()
    chosen = {key: samples[key] for key in sorted(samples, key=sample_number)[:limit]}
    teacher = LocalTeacher(folder, max_new_tokens=max_new_tokens, batch_size=batch_size)
    scores, first = {}, {}
    started = time.perf_counter()
    with Sandbox(SandboxConfig(limits=Limits(timeout_s=cruxeval.TIMEOUT_S))) as sandbox:
        for mode in ("output", "input"):
            chats = [cruxeval_prompts.messages(mode, s.code, s.input, s.output) for s in chosen.values()]
            replies = teacher.reply(chats)
            generations = {key: [cruxeval_prompts.generation_from_reply(mode, reply.text or "")]
                           for key, reply in zip(chosen, replies)}
            scores[f"CRUXEval-{mode[0].upper()}"] = cruxeval.score(generations, mode, chosen, sandbox).pass_at_1
            first[mode] = replies[0].text or f"(no reply: {replies[0].error})"
    return CruxevalResult(scores, len(chosen), first, teacher.usage.completion_tokens,
                          time.perf_counter() - started)
