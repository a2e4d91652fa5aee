"""Batches for the trainer: a SeqIO mixture, packed, on host as numpy, then
global arrays on the mesh; or synthetic tokens for benchmarks.

Determinism: the mixture is read with a fixed seed and repeated, so batch n is
the same in every run; the iterator's position (batches handed out) goes into
each checkpoint, and a resumed run skips that many batches.

Many hosts: every input hands out the whole global batch, the same on every
host, and `to_global` passes on only the rows the batch sharding puts on this
host's devices. So batch n is the same whatever the number of processes, and
a job on 2 hosts x 4 devices trains on what one host with 8 devices does; a
checkpoint resumes on another number of hosts at the same place in the data.
The price: each host reads, tokenizes and packs the whole global batch, so
its input work is the global batch's, not its share's, and does not shrink as
hosts are added (benchmarks/input_pipeline.py measures the pipeline against
the step it feeds). Reading a shard per host (seqio.ShardInfo) would divide
that work but make the data, and so the run, depend on the number of hosts.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import gin
import jax
import numpy as np

from codeio_jax.training.step import BATCH_KEYS


# Examples of one epoch a task's shuffle draws from: a task up to this size is
# permuted as a whole each epoch; a larger one a window of this many at a time.
SHUFFLE_BUFFER = 10_000


@gin.configurable
class SeqioInput:
    """mixture: a registered SeqIO task or mixture name (tasks/codeio.py);
    length: packed sequence length; batch_size: global batch, rows of `length`
    (every host reads all of it: see the module docstring)."""

    def __init__(self, mixture: str = gin.REQUIRED, length: int = 2048, batch_size: int = 8, seed: int = 0,
                 split: str = "train", pack: bool = True, register: Any = None):
        if register is not None:
            register()  # e.g. @register_codeio_tasks: registration bound in the same gin file
        self.mixture, self.length, self.batch_size = mixture, length, batch_size
        self.seed, self.split, self.pack = seed, split, pack
        self.position = 0
        self._iterator: Iterator | None = None

    def _dataset(self):
        """Each task read in epochs, every epoch a fresh permutation of it, then the
        tasks mixed at the mixture's rates and packed. (seqio.get_dataset repeats a
        task before shuffling it, so a task smaller than the shuffle buffer comes
        back as copies drawn with replacement: on a few hundred examples the same
        one twice in a row, and its first batch waits for the buffer's thousand.)"""
        import seqio
        import tensorflow as tf

        from tasks.feature_converters import ChatLMFeatureConverter

        self._check_every_task_has_data()
        mixture = seqio.get_mixture_or_task(self.mixture)
        lengths = {"targets": self.length}
        streams, rates = [], []
        for index, task in enumerate(self._tasks()):
            epoch = task.get_dataset(sequence_length=lengths, split=self.split, shuffle=False, num_epochs=1)
            streams.append(epoch.shuffle(SHUFFLE_BUFFER, seed=self.seed + index, reshuffle_each_iteration=True)
                           .repeat())
            rates.append(mixture.get_rate(task) if isinstance(mixture, seqio.Mixture) else 1.0)
        mixed = streams[0] if len(streams) == 1 else tf.data.Dataset.sample_from_datasets(
            streams, weights=rates, seed=self.seed)
        dataset = ChatLMFeatureConverter(pack=self.pack)(mixed, lengths)
        return dataset.batch(self.batch_size, drop_remainder=True).skip(self.position).prefetch(2)

    def _tasks(self) -> list:
        import seqio

        mixture = seqio.get_mixture_or_task(self.mixture)
        return list(mixture.tasks) if isinstance(mixture, seqio.Mixture) else [mixture]

    def _check_every_task_has_data(self) -> None:
        """A task none of whose examples fits `length` (or passes its filters) would
        make the repeated mixture wait forever for its first example: say so instead.
        One example per task is read (a whole epoch only of a task that has none)."""
        import seqio

        empty = []
        for task in self._tasks():
            dataset = task.get_dataset(sequence_length={"targets": self.length}, split=self.split, shuffle=False,
                                       num_epochs=1)
            if next(iter(dataset.take(1)), None) is None:
                empty.append(task.name)
        if empty:
            raise ValueError(f"{', '.join(empty)} of {self.mixture} has no example of at most {self.length} tokens "
                             "(every one is longer, or filtered out): raise SeqioInput.length, or leave the task out")

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
        tokens = rng.integers(0, self.vocab_size, (self.batch_size, self.length + 1), dtype=np.int32)
        ones = np.ones((self.batch_size, self.length), np.int32)
        return {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
                "decoder_loss_weights": ones, "decoder_segment_ids": ones,
                "decoder_positions": np.broadcast_to(np.arange(self.length, dtype=np.int32), ones.shape).copy()}


def to_global(batch: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
    """The global batch (the same on every host) as one global array per feature,
    laid out by `sharding`; each host hands over only the part its devices hold."""
    return {key: jax.make_array_from_process_local_data(sharding, host_part(value, sharding), value.shape)
            for key, value in batch.items()}


def host_part(array: np.ndarray, sharding: jax.sharding.Sharding) -> np.ndarray:
    """The part of the global `array` that `sharding` puts on this process's
    devices, arranged as jax.make_array_from_process_local_data reads it: along
    each dimension, the distinct slices these devices hold, in increasing order.
    Computed from the sharding, so it holds for any order of the devices in the
    mesh (rows need not be contiguous, and hosts that replicate rows get the same)."""
    indices = list(sharding.addressable_devices_indices_map(array.shape).values())
    for dim, size in enumerate(array.shape):
        spans = sorted({index[dim].indices(size)[:2] for index in indices})
        if spans != [(0, size)]:
            array = np.take(array, np.concatenate([np.arange(start, stop) for start, stop in spans]), axis=dim)
    return array
