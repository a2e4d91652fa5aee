"""TFRecord shards written without TensorFlow, checked against real TensorFlow."""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from codeio_jax.data import tfrecords
from codeio_jax.data.tfrecords import (EXAMPLE_SCHEMA, CorruptRecordError, SchemaError, decode_example,
                                       decode_row, encode_example, frame, read_records)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tf():
    # Imported once per module and only by the tests that compare against it (~5 s).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


def make_row(i, **overrides):
    row = {"id": f"rec{i}:output_prediction:0", "record_id": f"rec{i}", "task": "output_prediction",
           "status": "verified", "system": "", "prompt": f"Predict the output #{i}\n\twith ünïcödé ✓",
           "turn_1": "Let me think…\n```json\n{\"output\": 1}\n```", "feedback_1": "",
           "turn_2": "", "feedback_2": "", "refcode": "def f(x):\n    return x\n", "funcname": "f",
           "input": {"x": [i, "é", None, 1.5], "nested": {"z": True}}, "output": i, "turns": 1}
    return {**row, **overrides}


# --- CRC-32C ---------------------------------------------------------------------------

@pytest.mark.parametrize("data, crc", [
    (b"123456789", 0xE3069283),
    (b"", 0),
    (bytes(32), 0x8A9136AA),                # RFC 3720 (iSCSI) test vectors
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
])
def test_crc32c_python_matches_known_vectors(data, crc):
    assert tfrecords.crc32c_python(data) == crc
    assert tfrecords.crc32c(data) == crc


@pytest.mark.skipif(tfrecords.crc32c_native is None, reason="no C CRC-32C (google_crc32c, crc32c)")
def test_crc32c_python_agrees_with_native():
    rng = random.Random(0)
    for size in (0, 1, 7, 8, 9, 1000, 65537):
        data = rng.randbytes(size)
        assert tfrecords.crc32c_python(data) == tfrecords.crc32c_native(data)


# --- Framing -------------------------------------------------------------------------

def test_framing_is_byte_identical_to_tf_writer(tf, tmp_path):
    rng = random.Random(1)
    payloads = [b"", b"x", rng.randbytes(1000), rng.randbytes(70_000), "ünï\n".encode()]
    path = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for payload in payloads:
            writer.write(payload)
    assert path.read_bytes() == b"".join(frame(p) for p in payloads)
    assert list(read_records(path)) == payloads


def test_reader_detects_a_flipped_byte(tmp_path):
    first, second = frame(b"first record"), frame(b"second record")
    path = tmp_path / "x.tfrecord"
    for at, message in ((len(first) + 12 + 3, "data checksum"), (len(first) + 2, "length checksum"),
                        (len(first) + len(second) - 1, "data checksum")):
        data = bytearray(first + second)
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptRecordError, match=f"{path}: byte {len(first)}: {message}"):
            list(read_records(path))


@pytest.mark.parametrize("cut, message", [(1, "truncated record \\(needs"), (20, "truncated record header")])
def test_reader_detects_a_truncated_file(tmp_path, cut, message):
    first, second = frame(b"first record"), frame(b"second record")
    path = tmp_path / "x.tfrecord"
    path.write_bytes((first + second)[:-cut])
    records = read_records(path)
    assert next(records) == b"first record"  # what precedes the damage still reads
    with pytest.raises(CorruptRecordError, match=f"{path}: byte {len(first)}: {message}"):
        next(records)


# --- Examples ------------------------------------------------------------------------

def test_examples_parse_in_tf_to_the_same_values(tf):
    rows = [make_row(0),
            make_row(1, prompt="", turn_1="line 1\nline 2\r\n\x00 nul", system="日本語 🚀", turns=2,
                     input=["a", {"b": "ü"}], output=None),
            make_row(2, turns=-(2**63), output=2**70, input="just a string"),
            make_row(3, turns=2**63 - 1, output={"k": [1.25, -3]}, input=[])]
    spec = {name: tf.io.FixedLenFeature([], tf.int64 if kind == "int" else tf.string)
            for name, kind in EXAMPLE_SCHEMA.items()}
    for row in rows:
        data = encode_example(row)
        parsed = tf.io.parse_single_example(data, spec)
        for name, kind in EXAMPLE_SCHEMA.items():
            value = parsed[name].numpy()
            if kind == "int":
                assert value == row[name]
            elif kind == "text":
                assert value.decode("utf-8") == row[name]
            else:
                assert value.decode("utf-8") == tfrecords.json.dumps(row[name], ensure_ascii=False,
                                                                     sort_keys=True)
        # Protobuf's own deterministic serialization (map keys sorted) gives our bytes.
        assert tf.train.Example.FromString(data).SerializeToString(deterministic=True) == data
        assert decode_row(data) == row


def test_fields_outside_the_schema_are_ignored():
    row = make_row(0)
    assert encode_example({**row, "extra": object()}) == encode_example(row)


def test_decoder_reads_examples_tf_wrote(tf):
    feature = tf.train.Feature
    example = tf.train.Example(features=tf.train.Features(feature={
        "b": feature(bytes_list=tf.train.BytesList(value=[b"", b"\xff\x00", "é".encode()])),
        "f": feature(float_list=tf.train.FloatList(value=[0.5, -2.0, 3.25])),
        "i": feature(int64_list=tf.train.Int64List(value=[0, -1, 2**63 - 1, -(2**63), 300])),
        "empty": feature(int64_list=tf.train.Int64List(value=[])),
    }))
    assert decode_example(example.SerializeToString()) == {
        "b": [b"", b"\xff\x00", "é".encode()], "f": [0.5, -2.0, 3.25],
        "i": [0, -1, 2**63 - 1, -(2**63), 300], "empty": []}


@pytest.mark.parametrize("change, message", [
    ({"prompt": None}, "field `prompt` must be a str, got NoneType"),
    ({"turns": True}, "field `turns` must be an int, got bool"),
    ({"turns": "2"}, "field `turns` must be an int, got str"),
    ({"turns": 2**63}, "field `turns` = 9223372036854775808 does not fit in an int64"),
    ({"input": {1, 2}}, "field `input` is not JSON-serializable"),
    ({"turn_1": "\ud800"}, "field `turn_1` is not valid UTF-8 text"),
])
def test_schema_errors_name_the_row_and_field(change, message):
    with pytest.raises(SchemaError, match=f"row 'rec7:output_prediction:0': {message}"):
        encode_example(make_row(7, **change))


def test_a_missing_field_is_an_error():
    row = make_row(7)
    del row["feedback_2"]
    with pytest.raises(SchemaError, match="row 'rec7:output_prediction:0': field `feedback_2` is missing"):
        encode_example(row)
    with pytest.raises(SchemaError, match="unknown kind 'float'"):
        encode_example(row, {"feedback_1": "float"})


# --- Shards --------------------------------------------------------------------------

def test_importing_the_module_does_not_import_tensorflow():
    code = "import sys, codeio_jax.data.tfrecords; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
