"""What a run reports at each logged step: loss, learning rate, gradient norm,
tokens/s and MFU, to `<model_dir>/metrics.jsonl` (one JSON object per logged
step), to TensorBoard, and to a callback (the CLI prints a progress line).

MFU = (training FLOPs per token, counted in step.flops_per_token) x tokens/s
      / (peak bf16 FLOP/s per device x devices).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import jax


def peak_flops_per_device() -> float | None:
    """This machine's device's dense bf16 peak (hardware.py's table; None when unknown, e.g. CPU)."""
    from codeio_jax.training.hardware import peak_flops_per_device as peak_for_kind

    return peak_for_kind(jax.devices()[0].device_kind)


class MetricsLog:
    def __init__(self, model_dir, flops_per_token: float, peak_flops: float | None, devices: int,
                 on_log: Callable[[dict], None] | None = None):
        self.flops_per_token, self.peak_flops, self.devices = flops_per_token, peak_flops, devices
        self.on_log = on_log
        self.primary = jax.process_index() == 0
        self.jsonl = None
        self.writer = None
        if self.primary:
            from codeio_jax.training.tensorboard import SummaryWriter

            folder = Path(str(model_dir))
            folder.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(folder / "metrics.jsonl", "a", encoding="utf-8")
            self.writer = SummaryWriter(folder / "tensorboard")

    def write(self, step: int, metrics: dict, tokens_per_s: float | None, extra: dict | None = None) -> dict:
        """tokens_per_s: the train step's (with MFU where the peak is known), or
        None where the row has throughputs of its own (rl's rollout_tokens_per_s)."""
        row = {"step": step, **{key: float(value) for key, value in metrics.items()}}
        if tokens_per_s is not None:
            row["tokens_per_s"] = tokens_per_s
            if self.peak_flops:
                row["mfu"] = self.flops_per_token * tokens_per_s / (self.peak_flops * self.devices)
        row.update(extra or {})
        if self.primary:
            self.jsonl.write(json.dumps(row) + "\n")
            self.jsonl.flush()
            self.writer.scalars({k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))},
                                step)
        if self.on_log:
            self.on_log(row)
        return row

    def close(self) -> None:
        if self.primary:
            self.jsonl.close()
            self.writer.close()
