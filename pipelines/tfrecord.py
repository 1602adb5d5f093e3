"""TFRecord files and tf.train.Example protos written without importing TensorFlow.

The conversion tool's workers only decode, resize and encode images; importing TensorFlow
in each would cost ~2.4 s and ~300 MB per process for two small formats. Both are simple
and fixed:

- TFRecord: uint64 length, uint32 masked CRC32C of the length, data, uint32 masked CRC32C
  of the data (all little-endian), as tensorflow/core/lib/io/record_writer.cc.
- Example: protobuf wire format of example.proto / feature.proto, with the map entries in
  sorted key order, i.e. the bytes of `SerializeToString(deterministic=True)`.

Readers use TensorFlow, which checks both CRCs; tests compare these bytes with TensorFlow's.
"""

import os
import struct

import google_crc32c

_CRC_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data):
    """TFRecord's masked CRC32C of `data`."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


class TFRecordWriter:
    """Writes records to a TFRecord file (uncompressed); a context manager that fsyncs on close."""

    def __init__(self, path):
        self._file = open(path, "wb")

    def write(self, record):
        header = struct.pack("<Q", len(record))
        self._file.write(b"".join((
            header, struct.pack("<I", masked_crc32c(header)),
            record, struct.pack("<I", masked_crc32c(record)),
        )))

    def close(self):
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def count_records(path):
    """The number of records in a TFRecord file, from their headers alone (each length's CRC
    checked; the data is skipped, not read). ValueError names a torn or foreign file."""
    count = 0
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if not header:
                return count
            if len(header) < 12:
                raise ValueError(f"{path}: a record header is cut short at byte {f.tell() - len(header)}.")
            length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
            if masked_crc32c(length_bytes) != length_crc:
                raise ValueError(f"{path}: not a TFRecord file, or damaged at byte {f.tell() - 12}.")
            end = f.seek(struct.unpack("<Q", length_bytes)[0] + 4, os.SEEK_CUR)
            if end > size:
                raise ValueError(f"{path}: the last record is cut short ({end - size} bytes missing).")
            count += 1


def _varint(value):
    if value < 0:
        value += 1 << 64  # int64 negatives: ten-byte two's complement, as protobuf
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _length_delimited(field_number, payload):
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value):
    if isinstance(value, bytes):
        # Feature.bytes_list (1) -> BytesList.value (1)
        return _length_delimited(1, _length_delimited(1, value))
    if isinstance(value, int):
        # Feature.int64_list (3) -> Int64List.value (1), packed
        return _length_delimited(3, _length_delimited(1, _varint(value)))
    raise TypeError(f"Expected bytes or int feature values. Received: {type(value).__name__}")


def serialize_example(features):
    """Bytes of a tf.train.Example with one bytes or int64 value per key.

    Args:
      features: {key: bytes or int}.

    Returns:
      The serialized Example, identical to TensorFlow's deterministic serialization.
    """
    entries = b"".join(
        # Features.feature (1), a map entry: key (1), value (2)
        _length_delimited(1, _length_delimited(1, key.encode("utf-8"))
                          + _length_delimited(2, _feature(features[key])))
        for key in sorted(features))
    # Example.features (1)
    return _length_delimited(1, entries)
