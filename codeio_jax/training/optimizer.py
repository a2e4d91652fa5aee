"""AdamW with warmup and a decay schedule, gradient clipping and accumulation."""

from __future__ import annotations

import dataclasses

import gin
import jax
import optax


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float = 1e-5
    warmup_steps: int = 100
    schedule: str = "cosine"  # "cosine", "linear" or "constant" after the warmup
    end_learning_rate_ratio: float = 0.1  # the decay ends at this fraction of the peak
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float = 1.0  # 0: no clipping
    accumulation_steps: int = 1  # micro-batches per optimizer update

    def __post_init__(self):
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.accumulation_steps < 1:
            raise ValueError("accumulation_steps must be at least 1")


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0, then the decay over the remaining optimizer steps."""
    warmup = optax.linear_schedule(0.0, config.learning_rate, max(config.warmup_steps, 1))
    rest = max(total_steps - config.warmup_steps, 1)
    end = config.learning_rate * config.end_learning_rate_ratio
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(config.learning_rate, rest, alpha=config.end_learning_rate_ratio)
    elif config.schedule == "linear":
        decay = optax.linear_schedule(config.learning_rate, end, rest)
    else:
        decay = optax.constant_schedule(config.learning_rate)
    return optax.join_schedules([warmup, decay], [config.warmup_steps])


def make_optimizer(config: OptimizerConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(the optimizer, its schedule). `total_steps` counts optimizer updates."""
    schedule = learning_rate_schedule(config, total_steps)
    parts = []
    if config.clip_norm:
        parts.append(optax.clip_by_global_norm(config.clip_norm))
    # Norm weights and biases are not decayed (1-D parameters), as is usual for LLMs.
    parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                             weight_decay=config.weight_decay,
                             mask=lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)))
    optimizer = optax.chain(*parts)
    if config.accumulation_steps > 1:
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=config.accumulation_steps)
    return optimizer, schedule
