"""The converter's worker: writes one whole shard (a temporary file, its manifest, then the
rename that marks it complete). Runs in spawned processes that never import TensorFlow
(see pipelines.tfrecord), so they start in ~0.2 s."""

import os

import numpy as np

from pipelines import schema, tfrecord
from pipelines.conversion.images import BadImageError, encode_rgb_jpeg, pixel_sums
from pipelines.conversion.planning import tmp_shard_path


# Images done, shared with the parent's progress bar (a multiprocessing.Value, or None).
_progress_counter = None
# Images per counter update: the lock is taken once per 16 images.
_PROGRESS_BATCH = 16


class ShardError(Exception):
    """A shard could not be written; the message names the shard and the input file."""


def init_worker(counter):
    """Runs in each worker process first (and in the parent for one worker)."""
    global _progress_counter
    _progress_counter = counter
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_shard(task):
    """Writes one shard (temporary file, manifest, rename). Returns the manifest."""
    skipped = []
    pixel_sum, pixel_outer, pixel_count = np.zeros(3), np.zeros((3, 3)), 0
    num_examples = 0
    unreported = 0
    tmp_path = tmp_shard_path(task.path)
    relative_path = None
    try:
        with tfrecord.TFRecordWriter(tmp_path) as writer:
            for done, (relative_path, label, synset, text) in enumerate(task.entries, 1):
                try:
                    with open(os.path.join(task.input_dir, relative_path), "rb") as f:
                        data = f.read()
                    encoded, height, width, rgb = encode_rgb_jpeg(
                        data, resize_shorter=task.resize_shorter, quality=task.quality)
                except (BadImageError, OSError) as error:
                    reason = str(error) if isinstance(error, BadImageError) else f"unreadable ({error.strerror})"
                    skipped.append({"file": relative_path, "reason": reason})
                else:
                    writer.write(schema.make_example(
                        encoded=encoded, height=height, width=width, label=label,
                        synset=synset, text=text, filename=os.path.basename(relative_path)))
                    num_examples += 1
                    sums = pixel_sums(rgb)
                    pixel_sum += sums[0]
                    pixel_outer += sums[1]
                    pixel_count += sums[2]
                unreported += 1
                if _progress_counter is not None and (unreported == _PROGRESS_BATCH or done == len(task.entries)):
                    with _progress_counter.get_lock():
                        _progress_counter.value += unreported
                    unreported = 0
        manifest = {
            "fingerprint": task.fingerprint,
            "shard": os.path.basename(task.path),
            "num_examples": num_examples,
            "bytes": os.path.getsize(tmp_path),
            "skipped": skipped,
            "pixel_sum": pixel_sum.tolist(),
            "pixel_outer": pixel_outer.tolist(),
            "pixel_count": pixel_count,
        }
        relative_path = None
        schema.write_json_atomically(task.manifest_path, manifest)
        os.replace(tmp_path, task.path)
    except Exception as error:
        _remove(tmp_path)
        at = f" at {os.path.join(task.input_dir, relative_path)}" if relative_path else ""
        raise ShardError(f"Writing {task.path} failed{at}: {type(error).__name__}: {error}.") from None
    except BaseException:
        _remove(tmp_path)
        raise
    return manifest


def _remove(path):
    if os.path.exists(path):
        os.remove(path)
