"""The TensorFlow-free event writer, read back by TensorFlow and TensorBoard themselves."""

import math
import os
import struct
import subprocess
import sys
import time

import pytest

from codeio_jax.data.tfrecords import read_records
from codeio_jax.training.tensorboard import SummaryWriter, UnsupportedPathError

# Values float32 can hold only approximately, to check we store float32 and not a cast of it.
SCALARS = {"loss": 2.718281828, "learning_rate": 3e-4, "grad_norm": 1234.5678, "tokens_per_s": 1.5e6,
           "mfu": 0.4321}


@pytest.fixture(scope="module")
def tf():
    # Imported once per module and only by the tests that read with it (~5 s).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


def f32(value):
    return struct.unpack("<f", struct.pack("<f", value))[0]


def event_files(folder):
    return sorted(folder.glob("*tfevents*"))


def write_run(logdir, steps=(0, 1, 10, 2**40)):
    before = time.time()
    with SummaryWriter(logdir) as writer:
        for step in steps:
            writer.scalars({tag: value * (step + 1) for tag, value in SCALARS.items()}, step)
    return before, time.time(), writer.path


def test_tensorflow_reads_back_tags_steps_values_and_wall_times(tmp_path, tf):
    steps = (0, 1, 10, 2**40)
    before, after, path = write_run(tmp_path, steps)
    assert event_files(tmp_path) == [path]
    events = list(tf.compat.v1.train.summary_iterator(str(path)))
    assert events[0].file_version == "brain.Event:2"
    assert not events[0].HasField("summary")
    assert [event.step for event in events[1:]] == list(steps)
    for event in events:
        assert before - 1 <= event.wall_time <= after + 1
    assert [event.wall_time for event in events] == sorted(event.wall_time for event in events)
    for event, step in zip(events[1:], steps):
        assert {value.tag: value.simple_value for value in event.summary.value} == {
            tag: f32(value * (step + 1)) for tag, value in SCALARS.items()}
    # Protobuf's own serializer gives back the same bytes: our encoding is the canonical one.
    for record in read_records(path):
        assert tf.compat.v1.Event.FromString(record).SerializeToString() == record


def test_scalar_and_special_values(tmp_path, tf):
    with SummaryWriter(tmp_path) as writer:
        writer.scalar("loss", 1.25, 3)
        writer.scalar("huge", 1e40, 4)  # past float32: saturates to inf as a TF cast does
        writer.scalar("nan", float("nan"), 5)
        writer.scalar("negative_step", -7.0, -1)
    events = list(tf.compat.v1.train.summary_iterator(str(writer.path)))[1:]
    assert [(e.step, e.summary.value[0].tag) for e in events] == [
        (3, "loss"), (4, "huge"), (5, "nan"), (-1, "negative_step")]
    assert events[0].summary.value[0].simple_value == 1.25
    assert events[1].summary.value[0].simple_value == math.inf
    assert math.isnan(events[2].summary.value[0].simple_value)
    assert events[3].summary.value[0].simple_value == -7.0


def test_numpy_and_jax_scalars_are_accepted(tmp_path, tf):
    np = pytest.importorskip("numpy")
    jnp = pytest.importorskip("jax.numpy")
    with SummaryWriter(tmp_path) as writer:
        writer.scalars({"np": np.float32(0.5), "jax": jnp.asarray(0.25, jnp.bfloat16)}, np.int64(7))
    (event,) = list(tf.compat.v1.train.summary_iterator(str(writer.path)))[1:]
    assert event.step == 7
    assert {v.tag: v.simple_value for v in event.summary.value} == {"np": 0.5, "jax": 0.25}


def test_tensorboard_event_accumulator_reads_the_scalars(tmp_path):
    accumulator_module = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    steps = (0, 5, 10)
    write_run(tmp_path, steps)
    accumulator = accumulator_module.EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert set(accumulator.Tags()["scalars"]) == set(SCALARS)
    for tag, value in SCALARS.items():
        assert [(e.step, e.value) for e in accumulator.Scalars(tag)] == [
            (step, f32(value * (step + 1))) for step in steps]


def test_writers_in_one_folder_get_distinct_files(tmp_path, tf):
    writers = [SummaryWriter(tmp_path) for _ in range(3)]
    for index, writer in enumerate(writers):
        writer.scalar("loss", float(index), index)
    for writer in writers:
        writer.close()
    paths = event_files(tmp_path)
    assert sorted(writer.path for writer in writers) == paths and len(set(paths)) == 3
    for index, writer in enumerate(writers):
        name = writer.path.name.split(".")
        assert name[:3] == ["events", "out", "tfevents"] and name[-2] == str(os.getpid())
        events = list(tf.compat.v1.train.summary_iterator(str(writer.path)))
        assert [(e.step, e.summary.value[0].simple_value) for e in events[1:]] == [(index, index)]


def test_events_are_buffered_until_max_queue_or_flush(tmp_path):
    writer = SummaryWriter(tmp_path / "a" / "b", max_queue=3, flush_secs=3600)
    assert len(list(read_records(writer.path))) == 1  # the file_version event, at once
    writer.scalar("loss", 1.0, 1)
    writer.scalar("loss", 2.0, 2)
    assert len(list(read_records(writer.path))) == 1
    writer.scalar("loss", 3.0, 3)  # the third queued event triggers a write
    assert len(list(read_records(writer.path))) == 4
    writer.scalar("loss", 4.0, 4)
    writer.flush()
    assert len(list(read_records(writer.path))) == 5
    writer.scalar("loss", 5.0, 5)
    writer.close()
    writer.close()  # closing twice is harmless
    assert len(list(read_records(writer.path))) == 6
    with pytest.raises(ValueError, match="closed"):
        writer.scalar("loss", 6.0, 6)


def test_events_are_written_after_flush_secs(tmp_path):
    writer = SummaryWriter(tmp_path, max_queue=1000, flush_secs=0.0)
    writer.scalar("loss", 1.0, 1)
    assert len(list(read_records(writer.path))) == 2
    writer.close()


def test_urls_and_out_of_range_steps_are_refused(tmp_path):
    with pytest.raises(UnsupportedPathError, match="local"):
        SummaryWriter("gs://bucket/run/tensorboard")
    with SummaryWriter(tmp_path) as writer, pytest.raises(ValueError, match="int64"):
        writer.scalar("loss", 1.0, 2**63)


def test_importing_and_writing_does_not_import_tensorflow(tmp_path):
    code = ("import sys\nfrom codeio_jax.training.tensorboard import SummaryWriter\n"
            f"with SummaryWriter({str(tmp_path)!r}) as w:\n    w.scalar('loss', 1.0, 1)\n"
            "print('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    assert len(event_files(tmp_path)) == 1
