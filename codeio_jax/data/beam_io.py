"""Reading a source and writing shards on Beam, with nothing gathered in one worker.

ReadSource: the launcher lists the files (source.match); each file is cut into
byte ranges, the ranges (a few bytes each) are spread over the workers, and a
worker reads the lines that begin in its range (records.read_lines). Each line
comes with its file, its byte offset and a `position` (file index and offset in
one int) that orders the lines of the whole source.

WriteShards: the external sort of shards.py as transforms. Workers spill sorted
runs of their bundles to a scratch folder and pass on only the runs' names;
those are grouped by shard (names, not rows, cross the shuffle), one worker per
shard merges its runs into temporaries, and a last step renames every shard
into place together and clears the scratch folder. Beam's own sinks
(WriteToTFRecord, fileio.WriteToFiles) cannot be used: they pick a row's shard
at random and keep the order rows arrive in, so two runs differ in bytes.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from codeio_jax.data import shards
from codeio_jax.data.source import byte_ranges
from codeio_jax.records import MAX_LINE_BYTES, read_lines

RANGE_BYTES = 8 << 20  # a worker's share of a file at a time
FILE_BITS = 40  # a position is (file index << 40) + offset: files up to 1 TiB


class BeamFiles:
    """shards.Files over Beam's FileSystems: local paths, gs://, and the rest."""

    def open(self, path: str) -> BinaryIO:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def create(self, path: str) -> BinaryIO:
        return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def rename(self, source: str, dest: str) -> None:
        FileSystems.rename([source], [dest])

    def delete(self, paths: list[str]) -> None:
        found = [path for path in paths if FileSystems.exists(path)]
        if found:
            FileSystems.delete(found)

    def listing(self, folder: str, prefix: str) -> list[str]:
        matched = FileSystems.match([shards.join(folder, prefix) + "*"])[0].metadata_list
        return sorted(meta.path for meta in matched)


def position(file_index: int, offset: int) -> int:
    return (file_index << FILE_BITS) + offset


def _ranges(item: tuple[int, str], range_bytes: int) -> Iterator[tuple[int, str, int, int]]:
    index, path = item
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    for start, end in byte_ranges(size, range_bytes):
        yield index, path, start, end


def _read_range(item: tuple[int, str, int, int], max_line_bytes: int) -> Iterator[tuple[int, str, int, bytes]]:
    index, path, start, end = item
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        for offset, raw in read_lines(f, start, end, max_line_bytes):
            yield position(index, offset), path, offset, raw


class ReadSource(beam.PTransform):
    """(position, file, offset, raw line) for every non-blank line of `files`."""

    def __init__(self, files: list[str], range_bytes: int = RANGE_BYTES, max_line_bytes: int = MAX_LINE_BYTES):
        super().__init__()
        self._files, self._range_bytes, self._max_line_bytes = list(files), range_bytes, max_line_bytes

    def expand(self, pipeline):
        return (pipeline
                | "Files" >> beam.Create(list(enumerate(self._files)))
                | "Ranges" >> beam.FlatMap(_ranges, self._range_bytes)
                | "SpreadRanges" >> beam.Reshuffle()
                | "ReadRanges" >> beam.FlatMap(_read_range, self._max_line_bytes))


def _in_global_window(value: Any) -> WindowedValue:
    return WindowedValue(value, GlobalWindow().max_timestamp(), [GlobalWindow()])


class _Spill(beam.DoFn):
    """(shard, key, text) entries to sorted runs in `scratch`; out go (shard, run path)."""

    def __init__(self, name: str, scratch: str, run_bytes: int):
        self._name, self._scratch, self._run_bytes = name, scratch, run_bytes
        self._spiller: shards.Spiller | None = None

    def start_bundle(self) -> None:
        self._spiller = shards.Spiller(self._name, self._scratch, BeamFiles(), self._run_bytes)

    def process(self, entry: tuple[int, str, bytes]) -> Iterator[tuple[int, str]]:
        yield from self._spiller.add(*entry)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for run in self._spiller.flush():
            yield _in_global_window(run)


class SortedRuns(beam.PTransform):
    """(shard, key, text) entries into sorted runs on the filesystem, grouped:
    out go (shard, [run paths]), every shard of `count` included. Only names
    cross the shuffle, so neither the runner nor a worker holds the entries."""

    def __init__(self, name: str, count: int, scratch: str, run_bytes: int = shards.RUN_BYTES):
        super().__init__()
        self._name, self._count, self._scratch, self._run_bytes = name, count, scratch, run_bytes

    def expand(self, entries):
        runs = entries | "Spill" >> beam.ParDo(_Spill(self._name, self._scratch, self._run_bytes))
        every = entries.pipeline | "EveryShard" >> beam.Create([(shard, None) for shard in range(self._count)])
        return ((runs, every) | "AllRuns" >> beam.Flatten() | "RunsByShard" >> beam.GroupByKey()
                | "Paths" >> beam.MapTuple(lambda shard, paths: (shard, sorted(p for p in paths if p is not None))))


def read_runs(item: tuple[int, list[str]]) -> Iterator[tuple[str, bytes]]:
    """The entries of a shard's runs, in key order."""
    yield from shards.merged(BeamFiles(), item[1])


def _merge(item: tuple[int, list[str]], shard_set: shards.ShardSet, scratch: str) -> tuple[int, dict, dict]:
    shard, runs = item
    counts, temps = shards.merge_shard(shard_set, shard, runs, scratch, BeamFiles())
    return shard, counts, temps


def _commit(merged: list[tuple[int, dict, dict]], shard_set: shards.ShardSet, scratch: str) -> dict:
    files = BeamFiles()
    shards.commit(shard_set, [(shard, temps) for shard, _, temps in merged], files)
    files.delete([scratch])  # runs of retried bundles, never merged, go with it
    total = shards.Counts()
    for _, counts, _ in merged:
        total.merge(counts)
    return total.as_dict()


class WriteShards(beam.PTransform):
    """Rows into `shard_set`, the bytes the local driver writes; the output is
    one element, the set's counts (shards.Counts), once every shard is in place."""

    def __init__(self, shard_set: shards.ShardSet, scratch: str, run_bytes: int = shards.RUN_BYTES):
        super().__init__()
        self._set, self._scratch, self._run_bytes = shard_set, scratch, run_bytes

    def expand(self, rows):
        name = self._set.name
        return (rows
                | f"Key{name}" >> beam.Map(self._set.keyed)
                | f"Runs{name}" >> SortedRuns(name, self._set.count, self._scratch, self._run_bytes)
                | f"Merge{name}" >> beam.Map(_merge, self._set, self._scratch)
                | f"Merged{name}" >> beam.combiners.ToList()  # one small entry per shard
                | f"Commit{name}" >> beam.Map(_commit, self._set, self._scratch))
