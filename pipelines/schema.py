"""The one place that defines the on-disk dataset: TFRecord keys, labels, shard names, info file.

The writer (`pipelines.conversion`) and the readers (`pipelines.dataset`, `pipelines.verify`)
both import this module. The keys are those of TensorFlow's ImageNet tools
(tensorflow/models research/inception/data/build_imagenet_data.py), so their records read
here too; theirs have 1-based labels (0 = background), read with `label_offset=1`.
"""

import json
import os
import re

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_CHANNELS = "image/channels"
IMAGE_FILENAME = "image/filename"
CLASS_LABEL = "image/class/label"
CLASS_SYNSET = "image/class/synset"
CLASS_TEXT = "image/class/text"

# Our records store 0-based labels: label_offset is what a reader subtracts.
LABEL_OFFSET = 0

DATASET_INFO_FILE = "dataset_info.json"
TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"

_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})$")


def shard_name(split, index, num_shards):
    """`{split}-{index:05d}-of-{num_shards:05d}`, as TensorFlow's ImageNet tools name shards."""
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def parse_shard_name(name):
    """(split, index, num_shards) of a shard file name, or None if it is not one."""
    match = _SHARD_RE.match(os.path.basename(name))
    if not match:
        return None
    return match["split"], int(match["index"]), int(match["count"])


def split_file_pattern(data_dir, split):
    """Glob pattern of a split's shards in `data_dir`."""
    return os.path.join(data_dir, f"{split}-?????-of-?????")


def make_example(*, encoded, height, width, label, synset, text, filename):
    """A serialized tf.train.Example with the keys above, byte-identical in every process.

    Written by `pipelines.tfrecord` in sorted key order (TensorFlow's deterministic
    serialization; protobuf map order otherwise differs between processes).
    """
    from pipelines import tfrecord

    return tfrecord.serialize_example({
        IMAGE_ENCODED: encoded,
        IMAGE_FORMAT: b"JPEG",
        IMAGE_HEIGHT: int(height),
        IMAGE_WIDTH: int(width),
        IMAGE_CHANNELS: 3,
        IMAGE_FILENAME: filename.encode("utf-8"),
        CLASS_LABEL: int(label),
        CLASS_SYNSET: synset.encode("utf-8"),
        CLASS_TEXT: text.encode("utf-8"),
    })


def feature_spec():
    """The `tf.io.parse_example` spec for every key (defaults let foreign records parse)."""
    import tensorflow as tf

    return {
        IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=b"JPEG"),
        IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        IMAGE_CHANNELS: tf.io.FixedLenFeature([], tf.int64, default_value=3),
        IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=b""),
        CLASS_LABEL: tf.io.FixedLenFeature([], tf.int64),
        CLASS_SYNSET: tf.io.FixedLenFeature([], tf.string, default_value=b""),
        CLASS_TEXT: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    }


def training_feature_spec():
    """The two keys training needs: parsing only these is cheaper."""
    import tensorflow as tf

    return {
        IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        CLASS_LABEL: tf.io.FixedLenFeature([], tf.int64),
    }


def read_dataset_info(data_dir):
    """The parsed `dataset_info.json` of `data_dir`, or None if there is none."""
    path = os.path.join(data_dir, DATASET_INFO_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}). Rerun pipelines.convert to rewrite it."
            ) from error


def write_bytes_atomically(path, data):
    """Writes `data` to a temporary file beside `path`, syncs it, then renames it into place:
    readers see the old file or the whole new one, never half of it."""
    tmp_path = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp_path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def write_text_atomically(path, text):
    """`write_bytes_atomically` of UTF-8 text."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(path, value):
    """`write_text_atomically` of `value` as indented, key-sorted JSON."""
    write_text_atomically(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
