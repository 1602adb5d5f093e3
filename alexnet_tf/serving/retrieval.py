"""fc7 features and the paper's nearest neighbours (Section 6.1, Figure 4): the library behind
`python -m alexnet_tf.neighbors`.

"If two images produce feature activation vectors with a small Euclidean separation, we
can say that the higher levels of the neural network consider them to be similar." The
features of a split are computed once per checkpoint and cached beside the run
(`model_dir/features/<split>-<checkpoint>.npz`, plain arrays, read without pickle); a query
then costs one forward pass per query image and one pass over the cached matrix.
"""

import dataclasses
import json
import logging
import os
import sys
import time
import zipfile

import numpy as np
from numpy.lib import format as npy_format
import tensorflow as tf
import tqdm

from alexnet_tf import run_dir
from alexnet_tf.model.alexnet import feature_model
from pipelines import tfrecord

logger = logging.getLogger(__name__)

FEATURES_DIR = "features"
_DISTANCE_CHUNK = 65_536  # rows of the feature matrix per distance block


@dataclasses.dataclass(frozen=True)
class NeighborsConfig:
    model_dir: str
    file_pattern: str
    split: str
    queries: tuple  # image files
    k: int = 5
    output: str | None = None  # contact sheet PNG
    batch_size: int = 128
    checkpoint: str | None = None


@dataclasses.dataclass(frozen=True)
class FeatureIndex:
    """The features of every example of a split, and where each example is."""

    features: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int32 [N]
    file_indices: np.ndarray  # int64 [N], into `files`
    record_indices: np.ndarray  # int64 [N], within its file
    filenames: np.ndarray  # str [N], the source file names the converter recorded
    files: tuple  # shard paths


@dataclasses.dataclass(frozen=True)
class Neighbor:
    index: int
    distance: float
    label: int
    label_name: str
    filename: str


def _fingerprint(checkpoint, files, image_size, preprocessing):
    return json.dumps({"checkpoint": os.path.abspath(checkpoint), "image_size": image_size,
                       "preprocessing": preprocessing,
                       "files": [[os.path.abspath(f), os.path.getsize(f)] for f in files]}, sort_keys=True)


def split_features(model, *, image_size, statistics, checkpoint, file_pattern, cache_path, batch_size=128,
                   preprocessing="paper", progress=True, max_bad_fraction=None):
    """The `FeatureIndex` of a split: from `cache_path` if it was made by the same
    checkpoint from the same shards, else computed (a progress bar on a terminal, a line every
    30 s in a log, as the converter's) and cached atomically."""
    from pipelines import audit
    from pipelines import dataset as datasets

    if max_bad_fraction is None:
        max_bad_fraction = audit.DEFAULT_MAX_BAD_FRACTION
    files, dataset = datasets.build_indexed_dataset(file_pattern, batch_size=batch_size, image_size=image_size,
                                                    statistics=statistics, preprocessing=preprocessing,
                                                    max_bad_fraction=max_bad_fraction)
    fingerprint = _fingerprint(checkpoint, files, image_size, preprocessing)
    if os.path.exists(cache_path):
        with np.load(cache_path, allow_pickle=False) as cached:
            if str(cached["fingerprint"]) == fingerprint:
                logger.info("Reusing the cached features in %s", cache_path)
                return FeatureIndex(cached["features"], cached["labels"], cached["file_indices"],
                                    cached["record_indices"], cached["filenames"], tuple(files))
        logger.info("%s is from another checkpoint or other shards: recomputing", cache_path)
    extractor = feature_model(model)
    compute = tf.function(lambda images: extractor(images, training=False))
    # Counted first (record headers only) so that the features go into one preallocated
    # matrix: the peak memory is that matrix, not a list of batches plus their concatenation.
    # Without the undecodable images the audit skips (its verdict is cached: no second pass).
    skipped = sum(len(indices) for indices in audit.audit_files(files, max_bad_fraction=max_bad_fraction).values())
    total = sum(tfrecord.count_records(path) for path in files) - skipped
    if not total:
        raise ValueError(f"No examples in {file_pattern}.")
    arrays = {"features": np.empty((total, extractor.output.shape[-1]), np.float32),
              "labels": np.empty(total, np.int32), "file_indices": np.empty(total, np.int64),
              "record_indices": np.empty(total, np.int64)}
    filenames = []
    done, start = 0, time.perf_counter()
    bar = tqdm.tqdm(total=total, unit="images", desc="fc7 features", file=sys.stderr, disable=not progress,
                    mininterval=0.5 if sys.stderr.isatty() else 30.0)
    try:
        for images, labels, file_indices, record_indices, names in dataset:
            if done + len(labels) > total:
                raise ValueError(f"{file_pattern}: more examples than the {total} records the shards hold.")
            rows = slice(done, done + len(labels))
            for name, value in zip(arrays, (compute(images), labels, file_indices, record_indices)):
                arrays[name][rows] = value.numpy()
            filenames.extend(name.decode("utf-8", "replace") for name in names.numpy())
            done += len(labels)
            bar.update(len(labels))
    except tf.errors.ResourceExhaustedError as error:
        raise datasets.batch_memory_error(batch_size, error) from None
    finally:
        bar.close()
    if done != total:
        raise ValueError(f"{file_pattern}: read {done} examples of the {total} records the shards hold.")
    arrays["filenames"] = np.array(filenames)
    logger.info("fc7 features: %d images in %.1f s", done, time.perf_counter() - start)
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    _write_npz_atomically(cache_path, {"fingerprint": np.array(fingerprint), **arrays})
    return FeatureIndex(files=tuple(files), **arrays)


def _write_npz_atomically(path, arrays):
    """An uncompressed .npz that `np.load` reads, written straight from the arrays' memory (no
    copy of the feature matrix, where `np.savez` would copy it in 16 MB chunks), through a
    temporary file and a rename."""
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                array = np.require(array, requirements="C")  # (keeps 0-d arrays 0-d)
                with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                    npy_format.write_array_header_2_0(f, npy_format.header_data_from_array_1_0(array))
                    f.write(memoryview(array).cast("B") if array.size else b"")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def nearest_neighbors(features, queries, k):
    """(indices [Q, k], Euclidean distances [Q, k]) of each query's k nearest rows, nearest first.

    The matrix is read in blocks; each block keeps its k nearest rows per query."""
    queries = np.asarray(queries, np.float64)
    k = min(k, len(features))
    query_norms = (queries ** 2).sum(axis=1, keepdims=True)
    candidate_d2, candidate_index = [], []
    for start in range(0, len(features), _DISTANCE_CHUNK):
        block = np.asarray(features[start:start + _DISTANCE_CHUNK], np.float64)
        d2 = query_norms - 2.0 * queries @ block.T + (block ** 2).sum(axis=1)[None, :]
        top = np.argpartition(d2, k - 1, axis=1)[:, :k] if len(block) > k else \
            np.broadcast_to(np.arange(len(block)), d2.shape)
        candidate_d2.append(np.take_along_axis(d2, top, axis=1))
        candidate_index.append(top + start)
    d2, index = np.concatenate(candidate_d2, axis=1), np.concatenate(candidate_index, axis=1)
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    distances = np.sqrt(np.maximum(np.take_along_axis(d2, order, axis=1), 0.0))
    return np.take_along_axis(index, order, axis=1), distances


def decode_images(encoded, *, image_size, preprocessing="paper"):
    """uint8 [N, S, S, 3] centre crops (the evaluation and export preprocessing)."""
    from pipelines import dataset as datasets

    return np.stack([datasets.decode_for_eval(tf.constant(data), image_size=image_size,
                                              preprocessing=preprocessing).numpy() for data in encoded])


def image_features(model, pixels, rgb_mean):
    """fc7 of uint8 centre crops [N, S, S, 3]."""
    images = tf.cast(pixels, tf.float32) - tf.constant(rgb_mean, tf.float32)
    return feature_model(model)(images, training=False).numpy()


def find_neighbors(config):
    """The k nearest training (or `config.split`) images of each query, by fc7 distance.

    Returns:
      (list of (query path, [Neighbor, ...]) per query, the contact sheet path or None).
    """
    from pipelines import dataset as datasets

    model, spec, checkpoint = run_dir.load_model(config.model_dir, config.checkpoint)
    image_size = run_dir.network_of(spec).image_size
    statistics = run_dir.statistics_of(spec)
    encoded = []
    for path in config.queries:
        with open(path, "rb") as f:
            encoded.append(f.read())
    try:
        query_pixels = decode_images(encoded, image_size=image_size, preprocessing=run_dir.preprocessing_of(spec))
    except tf.errors.InvalidArgumentError as error:
        bad = next(path for path, data in zip(config.queries, encoded) if not _decodes(data))
        raise ValueError(f"{bad} is not a readable image ({error.message.splitlines()[0]}).") from None
    cache = os.path.join(config.model_dir, FEATURES_DIR,
                         f"{config.split}-{os.path.basename(checkpoint)}.npz")
    index = split_features(model, image_size=image_size, statistics=statistics, checkpoint=checkpoint,
                           file_pattern=config.file_pattern, cache_path=cache, batch_size=config.batch_size,
                           preprocessing=run_dir.preprocessing_of(spec))
    indices, distances = nearest_neighbors(index.features, image_features(model, query_pixels, statistics.rgb_mean),
                                           config.k)
    data_names = datasets.load_statistics(os.path.dirname(index.files[0])).class_names
    names = data_names or tuple(spec.get("class_names", ()))
    results = []
    for query, row, row_distances in zip(config.queries, indices, distances):
        results.append((query, [Neighbor(int(i), float(d), int(index.labels[i]),
                                         names[index.labels[i]] if index.labels[i] < len(names) else str(index.labels[i]),
                                         str(index.filenames[i])) for i, d in zip(row, row_distances)]))
    sheet = None
    if config.output:
        sheet = write_contact_sheet(config.output, query_pixels, results, index, image_size=image_size)
    return results, sheet


def _decodes(data):
    from pipelines import dataset as datasets

    try:
        datasets.decode_for_eval(tf.constant(data), image_size=64)
        return True
    except tf.errors.InvalidArgumentError:
        return False


def write_contact_sheet(path, query_pixels, results, index, *, image_size, tile=128):
    """A PNG with one row per query: the query, then its neighbours with label and distance."""
    from PIL import Image, ImageDraw

    from pipelines import dataset as datasets

    caption = 28
    columns = 1 + max(len(neighbors) for _, neighbors in results)
    sheet = Image.new("RGB", (columns * (tile + 4), len(results) * (tile + caption + 4)), "white")
    draw = ImageDraw.Draw(sheet)

    def place(pixels, row, column, lines):
        x, y = column * (tile + 4) + 2, row * (tile + caption + 4) + 2
        sheet.paste(Image.fromarray(pixels).resize((tile, tile)), (x, y))
        for line_index, text in enumerate(lines):
            draw.text((x, y + tile + 1 + 13 * line_index), text[:22], fill="black")

    for row, ((query, neighbors), pixels) in enumerate(zip(results, query_pixels)):
        place(pixels, row, 0, ["query", os.path.basename(query)])
        encoded = [datasets.read_example(index.files[index.file_indices[n.index]],
                                         int(index.record_indices[n.index]))[0] for n in neighbors]
        for column, (neighbor, neighbor_pixels) in enumerate(
                zip(neighbors, decode_images(encoded, image_size=image_size)), start=1):
            place(neighbor_pixels, row, column, [neighbor.label_name, f"d = {neighbor.distance:.4g}"])
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}.png")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
