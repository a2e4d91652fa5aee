"""TFRecord shards of `tf.train.Example` protos, written and read without TensorFlow.

The data pipeline runs where TensorFlow is absent, and `codeio-jax` commands must not
pay for importing it, so this module implements the two formats involved by hand:

* TFRecord framing: uint64 little-endian length, masked CRC-32C of those 8 bytes, the
  payload, masked CRC-32C of the payload.
* The protobuf wire format of `tf.train.Example`, restricted to what it uses:
  Example{features=1: Features{feature=1: map<string, Feature>}}, where Feature is a
  oneof bytes_list=1 / float_list=2 / int64_list=3, each a repeated `value=1`.

A schema maps field name -> kind: "text" (str -> one UTF-8 bytes value), "json" (any
JSON value -> one bytes value of its canonical JSON) or "int" (one int64). Output is
deterministic: map entries are sorted by key; shards.py spreads rows over files by a
hash of their id and sorts them inside each, so the same rows give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

# The assembled training examples of the pipeline (stage `assemble`).
EXAMPLE_SCHEMA: Mapping[str, str] = MappingProxyType({
    **{name: "text" for name in ("id", "record_id", "task", "status", "system", "prompt", "turn_1",
                                 "feedback_1", "turn_2", "feedback_2", "refcode", "funcname")},
    "input": "json", "output": "json",
    "turns": "int",  # number of assistant turns
})
KINDS = ("text", "json", "int")


class SchemaError(ValueError):
    """A row does not fit the schema: a field is missing or has the wrong type."""


class CorruptRecordError(ValueError):
    """A TFRecord file is truncated or fails a checksum; names the file and byte offset."""


# --- CRC-32C (Castagnoli) ------------------------------------------------------------

def _make_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1  # reflected Castagnoli polynomial
        table.append(n)
    return tuple(table)


_TABLE = _make_table()


def crc32c_python(data: bytes) -> int:
    """CRC-32C of `data`, table-driven in pure Python (about 12 MB/s)."""
    crc, table = 0xFFFFFFFF, _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _native_crc32c() -> Callable[[bytes], int] | None:
    """A C CRC-32C (~100x faster) if the environment happens to have one."""
    try:
        import google_crc32c

        # Without its C extension google_crc32c runs Python code no faster than ours.
        if getattr(google_crc32c, "implementation", "c") == "c":
            return google_crc32c.value
    except ImportError:
        pass
    try:
        import crc32c as module

        return module.crc32c
    except (ImportError, AttributeError):  # crc32c < 2.0 named the function `crc32`
        return None


crc32c_native = _native_crc32c()
crc32c = crc32c_native or crc32c_python


def masked_crc(data: bytes) -> int:
    """The masked CRC TFRecord stores; masking keeps a CRC of CRC-bearing data robust."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --- TFRecord framing ----------------------------------------------------------------

def frame(data: bytes) -> bytes:
    """One TFRecord: the framing `tf.io.TFRecordWriter` writes around `data`."""
    header = struct.pack("<Q", len(data))
    return b"".join((header, struct.pack("<I", masked_crc(header)), data,
                     struct.pack("<I", masked_crc(data))))


def read_records(path: str | os.PathLike) -> Iterator[bytes]:
    """The payloads of the TFRecord file at `path`, each checked against both CRCs."""
    with open(path, "rb") as file:
        offset = 0
        while True:
            header = file.read(12)
            if not header:
                return
            if len(header) < 12:
                raise CorruptRecordError(f"{path}: byte {offset}: truncated record header")
            (length,), (header_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc(header[:8]) != header_crc:
                raise CorruptRecordError(f"{path}: byte {offset}: length checksum mismatch")
            body = file.read(length + 4)
            if len(body) < length + 4:
                raise CorruptRecordError(f"{path}: byte {offset}: truncated record "
                                         f"(needs {length + 16} bytes, file has {len(body) + 12})")
            data = body[:length]
            if masked_crc(data) != struct.unpack("<I", body[length:])[0]:
                raise CorruptRecordError(f"{path}: byte {offset}: data checksum mismatch")
            yield data
            offset += length + 16


# --- tf.train.Example protobuf -------------------------------------------------------

def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # int64 on the wire: negatives are their 10-byte two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature_value(row: Mapping[str, Any], name: str, kind: str) -> bytes:
    """The serialized Feature for `row[name]`, checked against `kind`."""
    if kind not in KINDS:
        raise SchemaError(f"schema field `{name}` has unknown kind {kind!r} (expected one of {KINDS})")
    where = f"row {row.get('id', '(no id)')!r}: field `{name}`"
    if name not in row:
        raise SchemaError(f"{where} is missing")
    value = row[name]
    if kind == "int":
        # bool is an int subclass, but a bool where a count belongs is a bug upstream.
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(f"{where} must be an int, got {type(value).__name__}")
        if not -2**63 <= value < 2**63:
            raise SchemaError(f"{where} = {value} does not fit in an int64")
        return _field(3, _field(1, _varint(value)))  # int64_list, packed
    if kind == "text" and not isinstance(value, str):
        raise SchemaError(f"{where} must be a str, got {type(value).__name__}")
    if kind == "json":
        try:
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"{where} is not JSON-serializable: {exc}") from None
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SchemaError(f"{where} is not valid UTF-8 text: {exc}") from None
    return _field(1, _field(1, encoded))  # bytes_list


def encode_example(row: Mapping[str, Any], schema: Mapping[str, str] = EXAMPLE_SCHEMA) -> bytes:
    """`row` as a serialized tf.train.Example; fields not in `schema` are ignored."""
    entries = b"".join(
        _field(1, _field(1, name.encode("utf-8")) + _field(2, _feature_value(row, name, kind)))
        for name, kind in sorted(schema.items()))
    return _field(1, entries)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("malformed Example: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _parse(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of one message; bytes unless wire type 0."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            yield number, wire, value
            continue
        if wire not in (1, 2, 5):
            raise ValueError(f"malformed Example: unsupported wire type {wire}")
        size, pos = _read_varint(data, pos) if wire == 2 else (8 if wire == 1 else 4, pos)
        if pos + size > len(data):
            raise ValueError("malformed Example: field runs past the end")
        yield number, wire, data[pos:pos + size]
        pos += size


def _signed(value: int) -> int:
    return value - 2**64 if value >= 2**63 else value


def _feature_values(feature: bytes) -> list:
    values: list = []
    for kind, _, body in _parse(feature):
        for number, wire, value in _parse(body):
            if number != 1:
                continue
            if kind == 1:
                values.append(value)
            elif kind == 2:  # floats: packed (wire 2) or one per field (wire 5)
                values.extend(x for (x,) in struct.iter_unpack("<f", value))
            elif kind == 3 and wire == 0:
                values.append(_signed(value))
            elif kind == 3:  # packed int64s: varints back to back
                pos = 0
                while pos < len(value):
                    item, pos = _read_varint(value, pos)
                    values.append(_signed(item))
    return values


def decode_example(data: bytes) -> dict[str, list]:
    """A serialized tf.train.Example as {name: [values]}: bytes, floats or ints."""
    result: dict[str, list] = {}
    for number, _, features in _parse(data):
        if number != 1:
            continue
        for number, _, entry in _parse(features):
            if number != 1:
                continue
            fields = {number: value for number, _, value in _parse(entry)}
            result[fields.get(1, b"").decode("utf-8")] = _feature_values(fields.get(2, b""))
    return result


def decode_row(data: bytes, schema: Mapping[str, str] = EXAMPLE_SCHEMA) -> dict[str, Any]:
    """The inverse of `encode_example`: the schema's fields with their original values."""
    example, row = decode_example(data), {}
    for name, kind in schema.items():
        values = example.get(name)
        if values is None or len(values) != 1:
            raise ValueError(f"Example field `{name}` should hold one value, holds {values!r}")
        value = values[0]
        row[name] = value if kind == "int" else value.decode("utf-8")
        if kind == "json":
            row[name] = json.loads(row[name])
    return row


# --- Shards --------------------------------------------------------------------------

def shard_of(row_id: str, num_shards: int) -> int:
    """The shard of a row: a hash of its id, so the split is stable across runs and machines."""
    return int.from_bytes(hashlib.sha256(row_id.encode("utf-8")).digest()[:8], "big") % num_shards
