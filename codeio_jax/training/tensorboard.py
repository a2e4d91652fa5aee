"""TensorBoard scalars written without TensorFlow.

The training machines have JAX but not TensorFlow, so this module writes the event
files TensorBoard reads by hand. An event file is a TFRecord file (framing from
`codeio_jax.data.tfrecords.frame`) of serialized `tensorflow.Event` protos, of which
we need only:

  Event{wall_time: double = 1, step: int64 = 2, file_version: string = 3, summary: Summary = 5}
  Summary{value: repeated Value = 1}
  Value{tag: string = 1, simple_value: float = 2}

The first event of a file carries only `file_version = "brain.Event:2"`; TensorBoard
uses it to tell the format. `simple_value` is the legacy scalar encoding (modern TF
writes a rank-0 tensor instead) and TensorBoard still reads it as a scalar.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Mapping, SupportsFloat

import gin

from codeio_jax.data.tfrecords import _field, _varint, frame

FILE_VERSION = b"brain.Event:2"
# Per-process counter in the file name, as TF's own writer does: two writers opened in
# the same second by the same process still get distinct files.
_counter = itertools.count()


class UnsupportedPathError(ValueError):
    """The log directory is a URL (gs://, s3://...): only local paths are supported."""


def _event(wall_time: float, step: int = 0, file_version: bytes = b"", summary: bytes = b"") -> bytes:
    """A serialized Event; fields left at their default are omitted, as protobuf does."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)  # wire type 1: fixed64
    if step:
        out += _varint(2 << 3) + _varint(step)
    if file_version:
        out += _field(3, file_version)
    if summary:
        out += _field(5, summary)
    return out


def _float32(value: float) -> bytes:
    """`value` as a little-endian float32; out-of-range values become +-inf, not an error."""
    try:
        return struct.pack("<f", value)
    except OverflowError:  # struct refuses what would round to inf; float32 in TF saturates
        return struct.pack("<f", math.copysign(math.inf, value))


def _scalar_value(tag: str, value: float) -> bytes:
    """A serialized Summary.Value with `simple_value` (field 2, wire type 5: fixed32)."""
    return _field(1, tag.encode("utf-8")) + _varint(2 << 3 | 5) + _float32(value)


@gin.configurable
class SummaryWriter:
    """Appends scalar summaries to a new event file under `logdir`.

    Events are buffered in memory and written when `max_queue` of them are waiting,
    when `flush_secs` have passed since the last write, on `flush()` and on `close()`:
    a trainer logging every few steps then costs a list append most of the time.
    Not thread-safe: call it from one thread.
    """

    def __init__(self, logdir: str | os.PathLike, max_queue: int = 100, flush_secs: float = 10.0):
        if "://" in str(logdir):
            raise UnsupportedPathError(
                f"TensorBoard logdir {str(logdir)!r} is a URL; this writer only supports local "
                "paths: log to a local folder and sync it to the bucket")
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.max_queue, self.flush_secs = max_queue, flush_secs
        self._file = self._open_new_file()
        self.path = Path(self._file.name)
        self._queue: list[bytes] = []
        self._last_flush = time.monotonic()
        # Written and flushed at once, so TensorBoard sees a valid file from the start.
        self._file.write(frame(_event(time.time(), file_version=FILE_VERSION)))
        self._file.flush()

    def _open_new_file(self) -> BinaryIO:
        """A new event file; exclusive creation so concurrent writers never share one."""
        stamp, host, pid = int(time.time()), socket.gethostname(), os.getpid()
        while True:  # a reused pid, or a same-named host on a shared disk, may own this name
            path = self.logdir / f"events.out.tfevents.{stamp}.{host}.{pid}.{next(_counter)}"
            try:
                return open(path, "xb")  # noqa: SIM115 (closed in close())
            except FileExistsError:
                continue

    def scalar(self, tag: str, value: SupportsFloat, step: int) -> None:
        """Log `value` (anything `float()` takes, e.g. a NumPy or JAX scalar) under `tag`."""
        self.scalars({tag: value}, step)

    def scalars(self, values: Mapping[str, SupportsFloat], step: int) -> None:
        """Log several scalars at `step` as one event (one record however many tags)."""
        if self._file.closed:
            raise ValueError(f"SummaryWriter for {self.path} is closed")
        if not -2**63 <= int(step) < 2**63:  # the wire format would wrap it silently
            raise ValueError(f"step {step} does not fit in an int64")
        summary = b"".join(_field(1, _scalar_value(tag, float(value))) for tag, value in values.items())
        self._queue.append(frame(_event(time.time(), step=int(step), summary=summary)))
        if len(self._queue) >= self.max_queue or time.monotonic() - self._last_flush >= self.flush_secs:
            self.flush()

    def flush(self) -> None:
        """Write the buffered events to the file and hand them to the OS."""
        if self._file.closed:
            return
        self._file.write(b"".join(self._queue))
        self._file.flush()
        self._queue.clear()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush and close the file; further `close()` calls do nothing."""
        self.flush()
        self._file.close()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
