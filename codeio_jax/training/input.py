"""Batches for the trainer: a SeqIO mixture, packed, on host as numpy, then
global arrays on the mesh; or synthetic tokens for benchmarks.

Determinism: the mixture is read with a fixed seed and repeated, so batch n is
the same in every run; the iterator's position (batches handed out) goes into
each checkpoint, and a resumed run skips that many batches. Each host reads
its own shard of every batch (seqio.ShardInfo), so multi-host loading needs no
coordination.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import gin
import jax
import numpy as np

from codeio_jax.training.step import BATCH_KEYS


class InputError(ValueError):
    """Input that cannot feed the run as configured."""


@gin.configurable
class SeqioInput:
    """mixture: a registered SeqIO task or mixture name (tasks/codeio.py);
    length: packed sequence length; batch_size: global batch, rows of `length`."""

    def __init__(self, mixture: str = gin.REQUIRED, length: int = 2048, batch_size: int = 8, seed: int = 0,
                 split: str = "train", pack: bool = True, register: Any = None):
        if register is not None:
            register()  # e.g. @register_codeio_tasks: registration bound in the same gin file
        self.mixture, self.length, self.batch_size = mixture, length, batch_size
        self.seed, self.split, self.pack = seed, split, pack
        if batch_size % jax.process_count():
            raise InputError(f"batch_size {batch_size} does not split over {jax.process_count()} hosts")
        self.position = 0
        self._iterator: Iterator | None = None

    def _dataset(self):
        import seqio

        from tasks.feature_converters import ChatLMFeatureConverter

        shard = seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())
        dataset = seqio.get_dataset(self.mixture, task_feature_lengths={"targets": self.length},
                                    dataset_split=self.split, shuffle=True, num_epochs=None, seed=self.seed,
                                    shard_info=shard, feature_converter=ChatLMFeatureConverter(pack=self.pack))
        local = self.batch_size // jax.process_count()
        return dataset.batch(local, drop_remainder=True).skip(self.position).prefetch(2)

    def skip_to(self, position: int) -> None:
        """Continue after `position` batches (a restored checkpoint's)."""
        self.position = position
        self._iterator = None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = self._dataset().as_numpy_iterator()
        batch = next(self._iterator)
        self.position += 1
        return {key: batch[key] for key in BATCH_KEYS}


@gin.configurable
class SyntheticInput:
    """Random tokens, every position trained, one segment per row: for step-time
    and MFU benchmarks with no input pipeline in the way."""

    def __init__(self, vocab_size: int, length: int = 2048, batch_size: int = 8, seed: int = 0):
        self.vocab_size, self.length, self.batch_size, self.seed = vocab_size, length, batch_size, seed
        self.position = 0

    def skip_to(self, position: int) -> None:
        self.position = position

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, self.position))
        self.position += 1
        local = self.batch_size // jax.process_count()
        tokens = rng.integers(0, self.vocab_size, (local, self.length + 1), dtype=np.int32)
        ones = np.ones((local, self.length), np.int32)
        return {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
                "decoder_loss_weights": ones, "decoder_segment_ids": ones,
                "decoder_positions": np.broadcast_to(np.arange(self.length, dtype=np.int32), ones.shape).copy()}


def to_global(batch: Mapping[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """Each host's rows into one global array per feature, laid out by `sharding`."""
    return {key: jax.make_array_from_process_local_data(sharding, value) for key, value in batch.items()}
