import numpy as np
import pytest
import tensorflow as tf

from pipelines import tfrecord


@pytest.mark.parametrize("label", [0, 1, 127, 128, 300, 2**40, -1])
def test_examples_are_tensorflows_deterministic_bytes(label):
    features = {"image/encoded": bytes(range(256)) * 3, "image/class/label": label,
                "image/class/text": "Shetland sheepdog, ünïcode".encode("utf-8"), "a": b""}
    expected = tf.train.Example(features=tf.train.Features(feature={
        key: (tf.train.Feature(int64_list=tf.train.Int64List(value=[value])) if isinstance(value, int)
              else tf.train.Feature(bytes_list=tf.train.BytesList(value=[value])))
        for key, value in features.items()}))
    assert tfrecord.serialize_example(features) == expected.SerializeToString(deterministic=True)


def test_records_read_back_by_tensorflow_with_crc_checks(tmp_path):
    path = str(tmp_path / "records")
    payloads = [b"", b"x", np.random.default_rng(0).bytes(100_000)]
    with tfrecord.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == payloads
    # A flipped byte in the data fails TensorFlow's CRC check.
    data = bytearray(open(path, "rb").read())
    data[-10] ^= 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(path))


def test_unsupported_feature_type_is_a_clear_error():
    with pytest.raises(TypeError, match="float"):
        tfrecord.serialize_example({"x": 1.5})


def test_count_records_reads_headers_and_names_a_torn_file(tmp_path):
    path = str(tmp_path / "records")
    payloads = [b"", b"x" * 5, np.random.default_rng(1).bytes(70_000), b"y"]
    with tfrecord.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)
    assert tfrecord.count_records(path) == len(payloads) == sum(1 for _ in tf.data.TFRecordDataset(path))
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-3])  # the last record cut short
    with pytest.raises(ValueError, match="records: the last record is cut short"):
        tfrecord.count_records(path)
    open(path, "wb").write(b"not a tfrecord file at all")
    with pytest.raises(ValueError, match="not a TFRecord file"):
        tfrecord.count_records(path)
    open(path, "wb").write(b"")
    assert tfrecord.count_records(path) == 0
