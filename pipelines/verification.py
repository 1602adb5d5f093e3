"""Reads converted shards back and names any that is corrupt or miscounted.

Checks each record's CRCs (TensorFlow's reader does), that every record parses with the
schema's keys and has a label inside the class list, optionally that every image decodes,
and that the per-split counts equal those in dataset_info.json. Exit status 1 on any problem.
"""

import dataclasses
import glob
import os

from pipelines import schema


@dataclasses.dataclass
class VerifyReport:
    counts: dict = dataclasses.field(default_factory=dict)  # split -> records read
    problems: list = dataclasses.field(default_factory=list)  # human-readable, name the shard

    @property
    def exit_code(self):
        return 1 if self.problems else 0


def _verify_shard(path, num_classes, decode):
    """(records, problem or None) for one shard."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(path).batch(256)
    spec = schema.feature_spec()
    records = 0
    try:
        for serialized in dataset:
            features = tf.io.parse_example(serialized, spec)
            labels = features[schema.CLASS_LABEL].numpy()
            if num_classes and (labels.min() < 0 or labels.max() >= num_classes):
                return records, f"{path}: label outside [0, {num_classes}) near record {records}"
            if decode:
                for encoded in features[schema.IMAGE_ENCODED]:
                    tf.io.decode_jpeg(encoded, channels=3)
            records += len(labels)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        return records, f"{path}: corrupt after {records} records ({error.message.splitlines()[0]})"
    return records, None


def verify_dataset(data_dir, *, splits=None, decode=False, log=print):
    """Verifies the shards of `splits` (default: every split in dataset_info.json).

    Returns:
      A `VerifyReport`; `exit_code` is 1 if any problem was found.
    """
    report = VerifyReport()
    info = schema.read_dataset_info(data_dir)
    if info is None:
        report.problems.append(f"{os.path.join(data_dir, schema.DATASET_INFO_FILE)} is missing.")
        info = {}
    num_classes = len(info.get("classes", []))
    for split in splits or sorted(info.get("splits", {})):
        paths = sorted(glob.glob(schema.split_file_pattern(data_dir, split)))
        expected = info.get("splits", {}).get(split)
        if not paths:
            report.problems.append(f"No shards of split {split!r} in {data_dir}.")
            continue
        if expected and len(paths) != expected["num_shards"]:
            report.problems.append(
                f"Split {split!r}: {len(paths)} shards in {data_dir}, dataset_info.json says "
                f"{expected['num_shards']}.")
        total = 0
        for path in paths:
            records, problem = _verify_shard(path, num_classes, decode)
            total += records
            if problem:
                report.problems.append(problem)
        report.counts[split] = total
        if expected and total != expected["num_examples"]:
            report.problems.append(
                f"Split {split!r}: {total} records read, dataset_info.json says "
                f"{expected['num_examples']}.")
        log(f"{split}: {total} records in {len(paths)} shards")
    for problem in report.problems:
        log(f"PROBLEM: {problem}")
    log("OK" if not report.problems else f"{len(report.problems)} problem(s)")
    return report
