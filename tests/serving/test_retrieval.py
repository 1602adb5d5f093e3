"""fc7 features of a split and the paper's nearest neighbours."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf.serving import retrieval
from pipelines import dataset as datasets
from pipelines import schema

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("chunk", [4, 1000])
def test_nearest_neighbors_equal_brute_force(monkeypatch, chunk):
    monkeypatch.setattr(retrieval, "_DISTANCE_CHUNK", chunk)  # several blocks, and one
    rng = np.random.default_rng(0)
    features, queries = rng.normal(size=(23, 6)).astype(np.float32), rng.normal(size=(3, 6))
    indices, distances = retrieval.nearest_neighbors(features, queries, 5)
    brute = np.linalg.norm(queries[:, None, :] - features[None, :, :].astype(np.float64), axis=-1)
    np.testing.assert_array_equal(indices, np.argsort(brute, axis=1)[:, :5])
    np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :5], rtol=1e-6)
    # More neighbours asked than rows: every row, nearest first.
    indices, distances = retrieval.nearest_neighbors(features[:3], queries, 5)
    assert indices.shape == (3, 3) and np.all(np.diff(distances, axis=1) >= 0)


def _records(shards_dir, split):
    """[(path, record index, encoded, label, filename)] of every record, in file order."""
    out = []
    for path in sorted(glob.glob(schema.split_file_pattern(shards_dir, split))):
        for index, record in enumerate(tf.data.TFRecordDataset(path)):
            features = tf.io.parse_single_example(record, schema.feature_spec())
            out.append((path, index, features[schema.IMAGE_ENCODED].numpy(),
                        int(features[schema.CLASS_LABEL]), features[schema.IMAGE_FILENAME].numpy().decode()))
    return out


def test_indexed_dataset_names_where_each_example_is(tiny_dataset):
    files, dataset = datasets.build_indexed_dataset(schema.split_file_pattern(tiny_dataset, "train"),
                                                    batch_size=8, image_size=64)
    records = _records(tiny_dataset, "train")
    seen = []
    for images, labels, file_indices, record_indices, filenames in dataset:
        assert images.shape[1:] == (64, 64, 3) and images.dtype == tf.float32
        seen += list(zip(file_indices.numpy(), record_indices.numpy(), labels.numpy(), filenames.numpy()))
    assert len(seen) == len(records) == 35
    for (file_index, record_index, label, filename), (path, index, _, stored_label, stored_name) in zip(seen, records):
        assert (files[file_index], record_index, label, filename.decode()) == (path, index, stored_label, stored_name)
    encoded, label = datasets.read_example(files[1], 2)
    assert encoded == next(r[2] for r in records if r[0] == files[1] and r[1] == 2)


def test_a_training_image_is_its_own_nearest_neighbour_and_the_cache_is_reused(trained_run, tiny_dataset, tmp_path,
                                                                                caplog):
    records = _records(tiny_dataset, "train")
    queries = []
    for number, (_, _, encoded, _, _) in enumerate(records[::12]):  # three training images
        queries.append(str(tmp_path / f"query{number}.jpg"))
        with open(queries[-1], "wb") as f:
            f.write(encoded)
    config = retrieval.NeighborsConfig(model_dir=trained_run, file_pattern=schema.split_file_pattern(tiny_dataset, "train"),
                                       split="train", queries=tuple(queries), k=4, output=str(tmp_path / "sheet.png"),
                                       batch_size=8)
    with caplog.at_level("INFO", logger="alexnet_tf.serving.retrieval"):
        results, sheet = retrieval.find_neighbors(config)
    assert "fc7 features: 35 images" in caplog.text
    for (query, neighbors), (_, _, _, label, filename) in zip(results, records[::12]):
        assert [n.filename for n in neighbors][0] == filename
        assert neighbors[0].distance < 1e-3 * max(neighbors[1].distance, 1e-6)
        assert neighbors[0].label == label and neighbors[0].label_name.startswith("n0000000")
        assert [n.distance for n in neighbors] == sorted(n.distance for n in neighbors)
    with Image.open(sheet) as image:  # 3 rows of (query + 4 neighbours), 128-px tiles
        assert image.size == (5 * 132, 3 * 160) and image.format == "PNG"
        pixels = np.asarray(image)
    # Each row's first neighbour is the query itself: the same tile.
    np.testing.assert_array_equal(pixels[2:130, 2:130], pixels[2:130, 134:262])
    cache = glob.glob(os.path.join(trained_run, retrieval.FEATURES_DIR, "train-ckpt-*.npz"))
    assert len(cache) == 1
    with np.load(cache[0], allow_pickle=False) as cached:
        assert cached["features"].shape == (35, 32)
    # The CLI: a second query reuses the cache and prints the neighbours.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "alexnet_tf.neighbors", f"--model_dir={trained_run}",
                             f"--data_dir={tiny_dataset}", "--split=train", "--k=2", queries[0]], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Reusing the cached features" in result.stderr
    name = datasets.load_statistics(tiny_dataset).class_names[records[0][3]]
    assert f"1. distance     0.0000  {name}  ({records[0][4]})" in result.stdout


def test_an_unreadable_query_is_named(trained_run, tiny_dataset, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not an image at all")
    config = retrieval.NeighborsConfig(model_dir=trained_run, file_pattern=schema.split_file_pattern(tiny_dataset, "train"),
                                       split="train", queries=(str(bad),))
    with pytest.raises(ValueError, match="notes.jpg is not a readable image"):
        retrieval.find_neighbors(config)


def test_split_features_peak_memory_is_about_the_feature_matrix(tiny_dataset, tmp_path):
    """The features go into one preallocated matrix and are written from it: no list of batches
    plus a concatenation and a copy (three times the matrix; 63 GB for ImageNet's training split)."""
    import tracemalloc

    from alexnet_tf import build_alexnet
    from pipelines import DatasetStatistics

    def peak_of(fc_units, name):
        model = build_alexnet(5, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=fc_units, seed=0)
        kwargs = dict(image_size=64, statistics=DatasetStatistics(), checkpoint="none", batch_size=8,
                      file_pattern=schema.split_file_pattern(tiny_dataset, "train"))
        retrieval.split_features(model, cache_path=str(tmp_path / f"warm-{name}.npz"), **kwargs)  # traces
        tracemalloc.start()
        try:
            index = retrieval.split_features(model, cache_path=str(tmp_path / f"{name}.npz"), **kwargs)
            return tracemalloc.get_traced_memory()[1], index
        finally:
            tracemalloc.stop()

    # The paper's fc7 width against a narrow one: the difference is what the features cost.
    wide, index = peak_of(4096, "wide")
    narrow, _ = peak_of(8, "narrow")
    assert index.features.shape == (35, 4096)  # 573 KB
    assert wide - narrow < 1.5 * index.features.nbytes, (wide, narrow, index.features.nbytes)
    with np.load(tmp_path / "wide.npz", allow_pickle=False) as cached:  # the cache reads back
        np.testing.assert_array_equal(cached["features"], index.features)
        assert list(cached["filenames"]) == list(index.filenames)


def test_neighbours_of_an_imported_torchvision_run_use_its_crop(tmp_path):
    # A photo's nearest neighbour among the three photos is itself, at distance ~0: the query
    # and the split are cropped the same way (the run's "torchvision" crop) and fed the same.
    from alexnet_tf.weights import importing

    fixtures = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
    run = str(tmp_path / "torchvision_run")
    importing.import_weights(os.path.join(fixtures, "tiny_torchvision_alexnet.pth"), run)
    photos = sorted(os.listdir(os.path.join(fixtures, "photos")))
    shard = tmp_path / "data" / "train-00000-of-00001"
    shard.parent.mkdir()
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for label, name in enumerate(photos):
            with open(os.path.join(fixtures, "photos", name), "rb") as f:
                writer.write(schema.make_example(encoded=f.read(), height=1, width=1, label=label, synset=f"c{label}",
                                                 text="", filename=name))
    query = os.path.join(fixtures, "photos", photos[1])
    results, _ = retrieval.find_neighbors(retrieval.NeighborsConfig(
        model_dir=run, file_pattern=str(shard), split="train", queries=(query,), k=3))
    (_, neighbours), = results
    assert neighbours[0].filename == photos[1] and neighbours[0].distance < 1e-3
    assert neighbours[1].distance > 10 * max(neighbours[0].distance, 1e-6)
    cache = glob.glob(os.path.join(run, retrieval.FEATURES_DIR, "*.npz"))
    assert len(cache) == 1 and '"preprocessing": "torchvision"' in str(np.load(cache[0])["fingerprint"])


def test_split_features_count_what_the_audit_skips(tmp_path):
    # A foreign shard (no converter manifest) with one undecodable image among 8: the audit
    # skips it, so the feature matrix has 7 rows, each with its record index.
    import io

    from PIL import Image

    from alexnet_tf import build_alexnet
    from pipelines import DatasetStatistics, tfrecord

    def jpeg(seed):
        pixels = np.random.default_rng(seed).integers(0, 256, size=(80, 90, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG")
        return buffer.getvalue()

    shard = tmp_path / "train-00000-of-00001"
    with tfrecord.TFRecordWriter(str(shard)) as writer:
        for index in range(8):
            encoded = b"not an image" if index == 3 else jpeg(index)
            writer.write(tfrecord.serialize_example({schema.IMAGE_ENCODED: encoded, schema.CLASS_LABEL: index % 2,
                                                     schema.IMAGE_FILENAME: f"{index}.jpg".encode()}))
    model = build_alexnet(2, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=8, seed=0)
    index = retrieval.split_features(model, image_size=64, statistics=DatasetStatistics(), checkpoint="none",
                                     file_pattern=str(shard), cache_path=str(tmp_path / "f.npz"), batch_size=3,
                                     max_bad_fraction=0.2)
    assert index.features.shape == (7, 8)
    assert list(index.record_indices) == [0, 1, 2, 4, 5, 6, 7]
