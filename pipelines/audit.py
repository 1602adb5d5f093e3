"""Which records of a set of shards the input pipelines may read, decided before they read.

Shards that `pipelines.convert` wrote are trusted as they are: their manifest
(`.convert/<shard>.json`, the shard's byte count) says every record has the schema's keys and
an image the converter itself re-encoded. Any other shard (TensorFlow's ImageNet tools', a
copy whose manifest is gone, a foreign one) is audited once, before training or evaluation
reads it:

- every record is parsed with the schema: the first record that cannot be parsed stops the
  run at once, naming the shard, the record and TensorFlow's reason. The first record of
  every shard is parsed before any shard is read in full, so a foreign shard fails in
  seconds;
- every image is decoded (in parallel, as the pipeline decodes it); an image that does not
  decode is logged with its shard, record, file name and reason, and the pipelines skip that
  record. More of them than `max_bad_fraction` of the records (the converter's budget,
  0.1%) stops the run, with the count.

The verdict is cached beside the shards (`.audit/<shard>.json`, keyed by the shard's size and
modification time) when that folder is writable, so a shard is audited once. The pipelines
then need no `ignore_errors`: a record is read only if it parses and decodes, so no shard can
make them hang, and an error that still happens (a shard changed during the run) fails the
run instead of being dropped.
"""

import dataclasses
import functools
import json
import logging
import os
import re

from pipelines import schema

logger = logging.getLogger(__name__)

AUDIT_DIR = ".audit"
CONVERT_MANIFEST_DIR = ".convert"  # pipelines.conversion.planning.MANIFEST_DIR
DEFAULT_MAX_BAD_FRACTION = 0.001
_PARSE_BATCH = 256


class ShardError(ValueError):
    """A shard the pipelines must not read; the message names it and says why."""


@dataclasses.dataclass(frozen=True)
class ShardAudit:
    path: str
    records: int
    bad: tuple = ()  # ((record index, file name, reason), ...): images that do not decode
    trusted: bool = False  # written by pipelines.convert (not read)


def _is_converter_shard(path):
    folder, name = os.path.split(path)
    manifest = os.path.join(folder, CONVERT_MANIFEST_DIR, f"{name}.json")
    try:
        with open(manifest, encoding="utf-8") as f:
            written = json.load(f)
        return written.get("bytes") == os.path.getsize(path), int(written.get("num_examples", 0))
    except (OSError, ValueError, TypeError):
        return False, 0


def _stamp(path):
    stat = os.stat(path)
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _cache_path(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, AUDIT_DIR, f"{name}.json")


def _read_cache(path):
    try:
        with open(_cache_path(path), encoding="utf-8") as f:
            cached = json.load(f)
    except (OSError, ValueError):
        return None
    if cached.get("stamp") != _stamp(path):
        return None
    return ShardAudit(path, int(cached["records"]), tuple(tuple(b) for b in cached["bad"]))


def _write_cache(audit):
    try:
        os.makedirs(os.path.dirname(_cache_path(audit.path)), exist_ok=True)
        schema.write_json_atomically(_cache_path(audit.path), {
            "stamp": _stamp(audit.path), "records": audit.records, "bad": [list(b) for b in audit.bad]})
    except OSError as error:  # a read-only data folder: audit again next time
        logger.info("Not caching the audit of %s (%s)", audit.path, error.strerror)


def _reason(error):
    """TensorFlow's message without its function-node prefix and op suffix."""
    message = getattr(error, "message", str(error)).splitlines()[0]
    message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", message)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", message).strip()


def _parse_error(path, index, error):
    reason = _reason(error)
    return ShardError(
        f"{path}: record {index} cannot be parsed with the dataset schema ({reason}). Is this a "
        "shard of pipelines.convert (or of TensorFlow's ImageNet tools)? Remove or reconvert it.")


def _parse_all(path, *, first_only=False):
    """The number of records; ShardError at the first record that does not parse."""
    import tensorflow as tf

    spec = schema.training_feature_spec()
    records = tf.data.TFRecordDataset(path)
    if first_only:
        records = records.take(1)
    count = 0
    for batch in records.batch(_PARSE_BATCH):
        try:
            tf.io.parse_example(batch, spec)
        except tf.errors.InvalidArgumentError:
            for offset, serialized in enumerate(batch):
                try:
                    tf.io.parse_single_example(serialized, spec)
                except tf.errors.InvalidArgumentError as error:
                    raise _parse_error(path, count + offset, error) from None
        count += int(batch.shape[0])
    return count


def _undecodable(path, records):
    """((index, file name, reason), ...) of the shard's images that do not decode."""
    import tensorflow as tf

    from pipelines.decoding import decode_rgb

    spec = {key: schema.feature_spec()[key] for key in (schema.IMAGE_ENCODED, schema.IMAGE_FILENAME)}

    def check(index, serialized):
        image = decode_rgb(tf.io.parse_single_example(serialized, spec)[schema.IMAGE_ENCODED])
        tf.debugging.assert_positive(tf.reduce_prod(tf.shape(image)[:2]), message="empty image")
        return index

    decoded = tf.data.TFRecordDataset(path).enumerate().map(
        check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
    missing = sorted(set(range(records)) - {int(i) for i in decoded.as_numpy_iterator()})
    bad = []
    for index in missing:  # few: find each one's name and reason
        serialized = next(iter(tf.data.TFRecordDataset(path).skip(index).take(1)))
        features = tf.io.parse_single_example(serialized, spec)
        try:
            check(tf.constant(index, tf.int64), serialized)
            reason = "did not decode in the parallel pass"
        except tf.errors.InvalidArgumentError as error:
            reason = _reason(error)
        bad.append((index, features[schema.IMAGE_FILENAME].numpy().decode("utf-8", "replace"), reason))
    return tuple(bad)


@functools.lru_cache(maxsize=None)
def _audit_shard_cached(path, stamp_key):
    del stamp_key  # part of the memo's key: a changed shard is audited again
    cached = _read_cache(path)
    if cached is not None:
        return cached
    records = _parse_all(path)
    audit = ShardAudit(path, records, _undecodable(path, records))
    _write_cache(audit)
    return audit


def audit_shard(path):
    """The `ShardAudit` of one shard (trusted, cached, or read now)."""
    trusted, count = _is_converter_shard(path)
    if trusted:
        return ShardAudit(path, count, trusted=True)
    stamp = _stamp(path)
    return _audit_shard_cached(path, (stamp["bytes"], stamp["mtime_ns"]))


def damaged_shards(files):
    """[(shard, reason)] of the shards whose records fail TFRecord's length or data CRC: each
    read end to end (framing only, nothing parsed or decoded). For a run that met TensorFlow's
    bare "corrupted record" error, which names no file: a shard whose bytes changed after it
    was written (its manifest still trusts it)."""
    import tensorflow as tf

    damaged = []
    for path in files:
        try:
            tf.data.TFRecordDataset(path).reduce(tf.constant(0, tf.int64), lambda count, _: count + 1)
        except tf.errors.DataLossError as error:
            damaged.append((path, _reason(error)))
    return damaged


def damaged_shard_error(files, error):
    """The ShardError for TensorFlow's DataLossError while reading `files`: the damaged shard(s)
    named (`damaged_shards`), with the fix."""
    damaged = damaged_shards(files)
    if not damaged:
        return ShardError(f"Reading the shards failed: {_reason(error)}. Check them with python -m pipelines.verify.")
    listed = "\n".join(f"  {path}: {reason}" for path, reason in damaged)
    return ShardError(
        f"{len(damaged)} shard(s) changed after they were written (a disk or copy error):\n{listed}\n"
        "Delete the shard(s) and rerun the pipelines.convert command that made them (complete shards are "
        "kept, missing ones redone); python -m pipelines.verify checks every shard.")


def audit_files(files, *, max_bad_fraction=DEFAULT_MAX_BAD_FRACTION):
    """{shard: frozenset of record indices to skip} for the shards the pipelines will read.

    Raises:
      ShardError: a record that cannot be parsed (the shard, record and reason), or more
        undecodable images than `max_bad_fraction` of the records.
    """
    untrusted = [path for path in files if not _is_converter_shard(path)[0]]
    for path in untrusted:  # a foreign shard fails here, in seconds
        if _read_cache(path) is None:
            _parse_all(path, first_only=True)
    if untrusted:
        logger.info("Auditing %d shard(s) not written by pipelines.convert (parse every record, decode "
                    "every image; cached in %s/)", len(untrusted), AUDIT_DIR)
    audits = [audit_shard(path) for path in files]
    total = sum(a.records for a in audits)
    bad = [(a.path, *b) for a in audits for b in a.bad]
    for path, index, name, reason in bad:
        logger.warning("Skipping an undecodable image: %s record %d (%s): %s", path, index, name, reason)
    if bad and len(bad) > max_bad_fraction * total:
        raise ShardError(
            f"{len(bad)} of {total} images in the shards cannot be decoded ({len(bad) / max(total, 1):.2%}; "
            f"the budget is {max_bad_fraction:.2%}), e.g. {bad[0][0]} record {bad[0][1]} ({bad[0][2]}): "
            f"{bad[0][3]}. Reconvert the images with pipelines.convert, or raise --max_bad_fraction.")
    return {a.path: frozenset(b[0] for b in a.bad) for a in audits if a.bad}
