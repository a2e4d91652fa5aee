"""records.open_atomic and temporary_name: a file appears whole or not at all."""

import threading
from pathlib import Path

import pytest

from codeio_jax.records import open_atomic, remove_temporaries, temporary_name


def test_a_block_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with open_atomic(target) as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_the_file_is_not_at_its_name_until_the_block_ends(tmp_path):
    target = tmp_path / "out.jsonl"
    with open_atomic(target) as f:
        f.write("a\n")
        f.flush()
        assert not target.exists()
        [temporary] = list(tmp_path.iterdir())
        assert temporary.name.startswith(".out.jsonl.") and temporary.name.endswith(".partial")
    assert target.read_text() == "a\n"
    assert list(tmp_path.iterdir()) == [target]


def test_concurrent_writers_never_share_a_temporary(tmp_path):
    # Each thread writes a different whole file to the same name; whichever
    # rename lands last wins, and what is there is one writer's file entire.
    target = tmp_path / "shared.txt"
    bodies = [f"{i}\n" * 20_000 for i in range(8)]
    barrier = threading.Barrier(len(bodies))

    def write(body):
        with open_atomic(target) as f:
            barrier.wait()
            for line in body.splitlines(keepends=True):
                f.write(line)

    threads = [threading.Thread(target=write, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_text() in bodies
    assert list(tmp_path.iterdir()) == [target]


def test_temporary_names_sit_beside_local_and_remote_paths():
    local = temporary_name("/data/run/codeio_examples.tfrecord-00000-of-00004")
    assert local.startswith("/data/run/.codeio_examples.tfrecord-00000-of-00004.")
    remote = temporary_name("gs://bucket/run/report.md")
    assert remote.startswith("gs://bucket/run/.report.md.") and remote.endswith(".partial")
    assert temporary_name("report.md").startswith(".report.md.")
    assert temporary_name("gs://b/x") != temporary_name("gs://b/x")


def test_a_killed_writers_temporaries_are_removed_and_no_other_file(tmp_path):
    target = tmp_path / "prompts[1].jsonl"  # a name with glob characters in it
    leftovers = [Path(temporary_name(target)) for _ in range(2)]
    others = [Path(temporary_name(tmp_path / "prompts[1].jsonl.done")), tmp_path / "prompts[1].jsonl",
              Path(temporary_name(tmp_path / "prompts.errors.jsonl"))]
    for path in leftovers + others:
        path.write_text("x")
    remove_temporaries(target)
    assert sorted(tmp_path.iterdir()) == sorted(others)
