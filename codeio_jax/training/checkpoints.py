"""Orbax checkpoints of a run: the whole train state (parameters, optimizer,
step, RNG) and the input position, written asynchronously, the newest `keep`
kept. Restoring puts every array back with the sharding the run asks for, so a
run can resume on another mesh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, model_dir: str | Path, keep: int = 3, every: int = 1000, async_save: bool = True):
        directory = str(model_dir).rstrip("/") + "/checkpoints"
        if "://" not in directory:
            directory = str(Path(directory).absolute())
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(directory, options=options)
        self.every = every

    def save(self, step: int, state: Any, data_position: int, force: bool = False) -> bool:
        """Save when `step` falls on the interval (or `force`); returns whether it did."""
        if not force and (self.every <= 0 or step % self.every):
            return False
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  meta=ocp.args.JsonSave({"step": step, "data_position": data_position}))
        return self.manager.save(step, args=args, force=force)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, int]:
        """(state, input position) of `step` (default: the newest), laid out like `target`
        (a state of jax.ShapeDtypeStruct with shardings, or of arrays)."""
        step = self.manager.latest_step() if step is None else step
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), target)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored["state"], int(restored["meta"]["data_position"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
