"""Shards by key in bounded memory: the same bytes whatever the order, the runs
or the merge passes; nothing partial under a final name."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codeio_jax.data import shards
from codeio_jax.data.shards import ShardSet, write_local
from codeio_jax.data.tfrecords import SchemaError, decode_row, read_records, shard_of
from tests.data.test_tfrecords import make_row

ROOT = Path(__file__).resolve().parents[2]


def example_set(folder, count=4):
    return ShardSet(shards.EXAMPLES, count, shards.FORMATS, str(folder))


def written(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder)) if (folder / name).is_file()}


def test_any_order_any_run_size_gives_the_same_bytes(tmp_path):
    rows = [make_row(i) for i in range(60)]
    first = example_set(tmp_path / "a")
    counts = write_local(rows, first, str(tmp_path / "scratch"))
    assert counts == {"rows": 60, "by_task": {"output_prediction": 60}, "by_turns": {"1": 60}}
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    # Runs of about two rows each and merges of three at a time: several merge passes.
    write_local(shuffled, example_set(tmp_path / "b"), str(tmp_path / "scratch"), run_bytes=2_000)
    original = shards.FAN_IN
    shards.FAN_IN = 3
    try:
        write_local(reversed(rows), example_set(tmp_path / "c"), str(tmp_path / "scratch"), run_bytes=2_000)
    finally:
        shards.FAN_IN = original
    assert written(tmp_path / "a") == written(tmp_path / "b") == written(tmp_path / "c")
    assert not os.listdir(tmp_path / "scratch")  # every run merged and deleted
    for shard in range(4):
        records = [decode_row(data) for data in read_records(first.path("tfrecord", shard))]
        lines = [json.loads(line) for line in Path(first.path("jsonl", shard)).read_text().splitlines()]
        assert records == [{name: row[name] for name in records[0]} for row in lines]
        assert all(shard_of(row["id"], 4) == shard for row in lines)
        keys = [first.keyed(row)[1] for row in lines]
        assert keys == sorted(keys)
    assert sorted(r["id"] for r in shards.read_jsonl_shards(first)) == sorted(r["id"] for r in rows)


def test_a_run_per_row_merged_two_at_a_time_gives_the_same_bytes(tmp_path, monkeypatch):
    rows = [make_row(i, prompt="p" * (i % 7)) for i in range(40)]
    write_local(rows, example_set(tmp_path / "whole", 1), str(tmp_path / "scratch"))
    monkeypatch.setattr(shards, "FAN_IN", 2)
    write_local(rows, example_set(tmp_path / "runs", 1), str(tmp_path / "scratch"), run_bytes=1)
    assert written(tmp_path / "whole") == written(tmp_path / "runs")


def test_tensorflow_reads_the_shards(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rows = [make_row(i) for i in range(40)]
    found = example_set(tmp_path)
    write_local(rows, found, str(tmp_path / ".scratch"))
    spec = {"id": tf.io.FixedLenFeature([], tf.string), "turns": tf.io.FixedLenFeature([], tf.int64)}
    dataset = tf.data.TFRecordDataset([found.path("tfrecord", i) for i in range(4)]).map(
        lambda data: tf.io.parse_single_example(data, spec))
    assert sorted((x["id"].numpy().decode(), int(x["turns"].numpy())) for x in dataset) == \
        sorted((r["id"], 1) for r in rows)


def test_empty_shards_are_written_and_stale_ones_removed(tmp_path):
    write_local([make_row(i) for i in range(9)], example_set(tmp_path, 8), str(tmp_path / ".scratch"))
    one_row = example_set(tmp_path, 3)
    write_local([make_row(0)], one_row, str(tmp_path / ".scratch"))
    names = sorted(name for name in os.listdir(tmp_path) if not name.startswith("."))
    assert names == sorted(Path(path).name for path in one_row.paths())  # the 8-shard set is gone
    assert sorted(os.path.getsize(path) for path in one_row.paths())[:4] == [0, 0, 0, 0]


def test_a_failed_write_keeps_the_previous_shards(tmp_path):
    found = example_set(tmp_path, 2)
    write_local([make_row(i) for i in range(5)], found, str(tmp_path / ".scratch"))
    before = written(tmp_path)
    with pytest.raises(SchemaError, match="row 'rec3:output_prediction:0': field `turns`"):
        write_local([make_row(i, turns=None if i == 3 else 1) for i in range(9)], found,
                    str(tmp_path / ".scratch"))
    with pytest.raises(SchemaError, match="an example without a string `id`"):
        write_local([make_row(0), {"x": 1}], found, str(tmp_path / ".scratch"))
    assert written(tmp_path) == before
    with pytest.raises(ValueError, match="a positive int count"):
        example_set(tmp_path, 0)


def test_error_rows_are_keyed_without_their_engine_specific_line(tmp_path):
    errors = ShardSet(shards.ERRORS, 2, ("jsonl",), str(tmp_path))
    rows = [{"stage": "ios", "line": 7, "id": "a", "error": "timed out"},
            {"stage": "ios", "line": None, "id": None, "file": "x.jsonl", "offset": 10, "error": "not valid JSON"}]
    write_local(rows, errors, str(tmp_path / ".scratch"))
    again = ShardSet(shards.ERRORS, 2, ("jsonl",), str(tmp_path / "again"))
    write_local([{**rows[0], "line": 99}, {**rows[1], "line": 3}], again, str(tmp_path / ".scratch"))
    assert [Path(p).read_bytes() for p in errors.paths()] == [Path(p).read_bytes() for p in again.paths()]
    assert sorted(json.dumps(r, sort_keys=True) for r in shards.read_jsonl_shards(errors)) == sorted(
        json.dumps({k: v for k, v in r.items() if k != "line"}, sort_keys=True) for r in rows)


def test_a_killed_writer_leaves_no_shard_under_a_final_name_and_the_next_clears_up(tmp_path):
    marker = next(row["id"] for row in (make_row(i) for i in range(200)) if shard_of(row["id"], 4) == 1)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from codeio_jax.data import shards
        from tests.data.test_tfrecords import make_row
        original = shards.tfrecords.encode_example
        def encode(row, *args):  # dies in the middle of the second shard's merge
            if row["id"] == {marker!r}:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(row, *args)
        shards.tfrecords.encode_example = encode
        rows = [make_row(i, prompt="x" * 1000) for i in range(200)]
        shards.write_local(rows, shards.ShardSet("codeio_examples", 4, shards.FORMATS, {str(tmp_path)!r}),
                           {str(tmp_path / ".scratch")!r}, run_bytes=50_000)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    # Killed in the second shard's merge: the first's files are whole, yet under
    # temporary names, since no shard takes its final name before all are written.
    assert not [name for name in os.listdir(tmp_path) if name.startswith("codeio_examples.")]
    assert len([name for name in os.listdir(tmp_path) if name.startswith(".codeio_examples.")]) >= 2
    again = shards.ShardSet("codeio_examples", 4, shards.FORMATS, str(tmp_path))
    write_local([make_row(i) for i in range(5)], again, str(tmp_path / ".scratch"))
    left = sorted(name for name in os.listdir(tmp_path) if (tmp_path / name).is_file())
    assert left == sorted(Path(path).name for path in again.paths())  # the killed run's temporaries went
