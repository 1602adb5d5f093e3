import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import DatasetStatistics, audit, build_dataset, schema, tfrecord

ZERO_STATS = DatasetStatistics(rgb_mean=(0.0, 0.0, 0.0))


@pytest.fixture
def shards(tiny_dataset):
    return tiny_dataset


def _pattern(data_dir, split="train"):
    return schema.split_file_pattern(data_dir, split)


def _take(dataset, count):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_training_batches_shapes_dtypes_and_mean_subtracted(shards):
    dataset = build_dataset(_pattern(shards), training=True, batch_size=8, image_size=64, seed=0)
    assert dataset.element_spec[0].shape.as_list() == [8, 64, 64, 3]
    assert dataset.element_spec[0].dtype == tf.float32
    assert dataset.element_spec[1].dtype == tf.int32
    batches = _take(dataset, 6)  # 48 > 35 examples: the stream repeats
    images = np.stack([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert set(labels) == {0, 1, 2, 3, 4}
    info = schema.read_dataset_info(shards)
    # Mean subtracted: the mean of the batches is near 0, not near 127.
    assert abs(images.mean()) < 20 and images.max() <= 255 - min(info["rgb_mean"]) + 40


def test_training_is_random_and_seeded_evaluation_is_deterministic(shards):
    first = _take(build_dataset(_pattern(shards), training=True, batch_size=5, image_size=64, seed=1), 3)
    again = _take(build_dataset(_pattern(shards), training=True, batch_size=5, image_size=64, seed=1), 3)
    other = _take(build_dataset(_pattern(shards), training=True, batch_size=5, image_size=64, seed=2), 3)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    evaluation = build_dataset(_pattern(shards), training=False, batch_size=4, image_size=64)
    run1, run2 = list(evaluation.as_numpy_iterator()), list(evaluation.as_numpy_iterator())
    for (x1, y1), (x2, y2) in zip(run1, run2):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_epochs_see_each_example_once_with_new_augmentation(shards):
    # 35 examples, batch 5: each window of 7 batches is one epoch of the shuffled stream.
    dataset = build_dataset(_pattern(shards), training=True, batch_size=5, image_size=64, seed=3,
                            statistics=ZERO_STATS, lighting_stddev=0.0)
    labels = np.concatenate([y for _, y in _take(dataset, 14)])
    np.testing.assert_array_equal(np.bincount(labels[:35]), [7] * 5)
    np.testing.assert_array_equal(np.bincount(labels[35:]), [7] * 5)
    assert not np.array_equal(labels[:35], labels[35:])  # reshuffled


def test_evaluation_counts_every_example_once(shards):
    # 35 examples, batch 8: the last batch holds 3, nothing is dropped or repeated.
    batches = list(build_dataset(_pattern(shards), training=False, batch_size=8, image_size=64)
                   .as_numpy_iterator())
    assert [len(y) for _, y in batches] == [8, 8, 8, 8, 3]
    labels = np.concatenate([y for _, y in batches])
    np.testing.assert_array_equal(np.bincount(labels), [7] * 5)
    images = np.concatenate([x for x, _ in batches])
    assert len({img.tobytes() for img in images}) == 35


def test_ten_crop_evaluation(shards):
    batches = list(build_dataset(_pattern(shards), training=False, batch_size=4, image_size=64,
                                 crops=10, statistics=ZERO_STATS).as_numpy_iterator())
    images, labels = batches[0]
    assert images.shape == (4, 10, 64, 64, 3) and labels.shape == (4,)
    assert sum(len(y) for _, y in batches) == 35
    # Crops 5..9 mirror crops 0..4.
    np.testing.assert_array_equal(images[:, 5:], images[:, :5, :, ::-1])


def _write_records(path, images_and_labels, fmt="JPEG"):
    with tfrecord.TFRecordWriter(str(path)) as writer:
        for pixels, label in images_and_labels:
            if isinstance(pixels, bytes):
                encoded = pixels
            else:
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 100} if fmt == "JPEG" else {}))
                encoded = buffer.getvalue()
            writer.write(schema.make_example(encoded=encoded, height=1, width=1, label=label,
                                             synset="s", text="", filename="f"))


def test_training_crop_stays_inside_the_central_square(tmp_path):
    # 64 x 128 (stored shorter side 64): central square = columns 32..95 in green, the rest red.
    pixels = np.zeros((64, 128, 3), np.uint8)
    pixels[..., 0] = 255
    pixels[:, 32:96] = (0, 255, 0)
    _write_records(tmp_path / "train-00000-of-00001", [(pixels, 0)], fmt="PNG")
    dataset = build_dataset(str(tmp_path / "train-*"), training=True, batch_size=16, image_size=56,
                            seed=0, statistics=ZERO_STATS, lighting_stddev=0.0)
    for images, _ in _take(dataset, 4):
        assert images.shape == (16, 56, 56, 3)
        np.testing.assert_array_equal(images[..., 0], 0.0)  # no red column ever
        np.testing.assert_array_equal(images[..., 1], 255.0)


def test_label_offset_for_tensorflow_imagenet_records(tmp_path):
    # The TensorFlow ImageNet tools write labels 1..1000 (0 = background).
    pixels = np.full((40, 50, 3), 128, np.uint8)
    _write_records(tmp_path / "validation-00000-of-00001", [(pixels, 1), (pixels, 1000)])
    pattern = str(tmp_path / "validation-*")
    labels = np.concatenate([y for _, y in build_dataset(
        pattern, training=False, batch_size=2, image_size=64, label_offset=1).as_numpy_iterator()])
    np.testing.assert_array_equal(labels, [0, 999])
    labels = np.concatenate([y for _, y in build_dataset(
        pattern, training=False, batch_size=2, image_size=64).as_numpy_iterator()])
    np.testing.assert_array_equal(labels, [1, 1000])


def test_non_jpeg_and_corrupt_bytes_in_a_foreign_shard(tmp_path, caplog):
    # A shard pipelines.convert did not write is audited: the PNG decodes (the general
    # decoder), the corrupt image is logged with its shard and skipped by both pipelines.
    pixels = np.full((40, 50, 3), 100, np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    shard = tmp_path / "train-00000-of-00001"
    _write_records(shard, [(pixels, 0), (png.getvalue(), 1), (b"\xff\xd8 not really a jpeg", 2)])
    pattern = str(tmp_path / "train-*")
    caplog.set_level("WARNING", logger="pipelines.audit")
    evaluation = build_dataset(pattern, training=False, batch_size=3, image_size=64, statistics=ZERO_STATS,
                               max_bad_fraction=0.5)
    labels = np.concatenate([y for _, y in evaluation.as_numpy_iterator()])
    assert labels.tolist() == [0, 1]
    assert f"Skipping an undecodable image: {shard} record 2 (f): Unknown image file format" in caplog.text
    training = build_dataset(pattern, training=True, batch_size=4, image_size=64, seed=0, statistics=ZERO_STATS,
                             lighting_stddev=0.0, shuffle_buffer=1, max_bad_fraction=0.5)
    images, labels = next(iter(training))
    assert set(labels.numpy()) == {0, 1}
    np.testing.assert_allclose(images.numpy(), 100.0, atol=2.0)
    # The verdict is cached beside the shard, keyed by its size and time.
    assert (tmp_path / ".audit" / f"{shard.name}.json").exists()
    # Over the budget (the converter's 0.1% by default): refused, with the count.
    with pytest.raises(audit.ShardError, match=r"1 of 3 images in the shards cannot be decoded \(33.33%; the budget is 0.10%\)"):
        build_dataset(pattern, training=True, batch_size=4, image_size=64, seed=0, statistics=ZERO_STATS)


def test_a_shard_that_does_not_parse_stops_the_run_at_once_naming_it(tmp_path):
    # Foreign keys (a label stored as bytes): every record fails to parse. Before the audit,
    # training skipped them all after repeat() and waited forever for a batch.
    shard = tmp_path / "train-00000-of-00001"
    with tfrecord.TFRecordWriter(str(shard)) as writer:
        for _ in range(3):
            writer.write(tfrecord.serialize_example({schema.IMAGE_ENCODED: b"x", schema.CLASS_LABEL: b"cat"}))
    for training in (True, False):
        with pytest.raises(audit.ShardError, match=rf"{shard}: record 0 cannot be parsed with the dataset schema "
                                                   r"\(.*image/class/label.*\)"):
            build_dataset(str(tmp_path / "train-*"), training=training, batch_size=2, image_size=64, seed=0,
                          statistics=ZERO_STATS)


def test_shards_of_the_converter_are_trusted_without_reading(shards):
    import glob
    import os

    files = sorted(glob.glob(_pattern(shards)))
    audits = [audit.audit_shard(path) for path in files]
    assert all(a.trusted for a in audits) and sum(a.records for a in audits) == 35  # the manifests' counts
    assert audit.audit_files(files) == {} and not os.path.exists(os.path.join(shards, audit.AUDIT_DIR))


def test_per_replica_batches_under_mirrored_strategy(shards):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    dataset = strategy.distribute_datasets_from_function(
        lambda context: build_dataset(_pattern(shards), training=True, batch_size=8, image_size=64,
                                      seed=0, input_context=context))
    images, labels = next(iter(dataset))
    per_replica = strategy.experimental_local_results(images)
    assert [x.shape for x in per_replica] == [(4, 64, 64, 3), (4, 64, 64, 3)]
    assert [y.shape for y in strategy.experimental_local_results(labels)] == [(4,), (4,)]


def test_workers_shard_by_file_and_too_few_files_is_clear(shards):
    too_many = tf.distribute.InputContext(num_input_pipelines=4, input_pipeline_id=0, num_replicas_in_sync=4)
    with pytest.raises(ValueError, match="4 workers read 3 files"):
        build_dataset(_pattern(shards), training=True, batch_size=8, image_size=64, input_context=too_many)
    seen = []
    for worker in range(3):
        context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=worker,
                                             num_replicas_in_sync=3)
        batches = build_dataset(_pattern(shards), training=False, batch_size=6, image_size=64,
                                input_context=context)
        seen.extend(img.tobytes() for x, _ in batches.as_numpy_iterator() for img in x)
    assert len(seen) == len(set(seen)) == 35  # disjoint files, together everything


def test_no_files_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="No files match.*pipelines.convert"):
        build_dataset(str(tmp_path / "train-*"), training=True, batch_size=2)


@pytest.mark.parametrize("consumed_batches", [3, 9])
def test_the_training_stream_rebuilds_exactly_from_a_position(shards, consumed_batches):
    # 35 training records, batches of 5: 9 batches cross into the second epoch. A stream
    # built at start_example = what was consumed continues exactly, with no iterator state.
    common = dict(training=True, batch_size=5, image_size=64, seed=4)
    iterator = iter(build_dataset(_pattern(shards), **common))
    for _ in range(consumed_batches):
        next(iterator)
    expected = [next(iterator) for _ in range(4)]
    resumed = iter(build_dataset(_pattern(shards), start_example=5 * consumed_batches, **common))
    for images, labels in expected:
        got_images, got_labels = next(resumed)
        np.testing.assert_array_equal(got_labels.numpy(), labels.numpy())
        np.testing.assert_array_equal(got_images.numpy(), images.numpy())


def test_examples_per_epoch_makes_the_datas_epochs_the_runs(shards):
    # 32 of the 35 records per epoch (a run's 8 steps of 4): each epoch, 32 distinct examples.
    dataset = build_dataset(_pattern(shards), training=True, batch_size=4, image_size=64, seed=1,
                            examples_per_epoch=32, statistics=ZERO_STATS, output_dtype=tf.uint8)
    batches = _take(dataset, 16)
    for epoch in range(2):
        images = np.concatenate([x for x, _ in batches[8 * epoch:8 * epoch + 8]])
        assert len({image.tobytes() for image in images}) == 32


def test_tfds_source_on_a_tiny_local_dataset(tmp_path):
    import tensorflow_datasets as tfds

    class TinyImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=3)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(9), "validation": self._generate_examples(4)}

        def _generate_examples(self, count):
            rng = np.random.default_rng(count)
            for i in range(count):
                yield i, {"image": rng.integers(0, 255, (50 + i, 70, 3), dtype=np.uint8), "label": i % 3}

    TinyImages(data_dir=str(tmp_path)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    training = build_dataset(str(tmp_path), tfds_name="tiny_images", training=True, batch_size=4,
                             image_size=64, seed=0)
    images, labels = next(iter(training))
    assert images.shape == (4, 64, 64, 3) and images.dtype == tf.float32
    assert set(labels.numpy()) <= {0, 1, 2}
    evaluation = build_dataset(str(tmp_path), tfds_name="tiny_images", training=False, batch_size=3,
                               image_size=64)
    labels = np.concatenate([y for _, y in evaluation.as_numpy_iterator()])
    np.testing.assert_array_equal(np.sort(labels), [0, 0, 1, 2])


def test_uint8_output_is_the_crops_before_flip_lighting_and_mean(shards):
    common = dict(batch_size=6, image_size=48, seed=3, statistics=DatasetStatistics(rgb_mean=(10.0, 20.0, 30.0)))
    raw = build_dataset(_pattern(shards), training=True, output_dtype=tf.uint8, **common)
    ready = build_dataset(_pattern(shards), training=True, lighting_stddev=0.0, **common)
    assert raw.element_spec[0].dtype == tf.uint8 and raw.element_spec[0].shape.as_list() == [6, 48, 48, 3]
    assert raw.element_spec[1].dtype == tf.int32
    mean = np.asarray([10.0, 20.0, 30.0], np.float32)
    flipped = 0
    for (crops, labels), (images, ready_labels) in zip(_take(raw, 3), _take(ready, 3)):
        np.testing.assert_array_equal(labels, ready_labels)
        for crop, image in zip(crops.astype(np.float32) - mean, images):
            # The same crop; the float pipeline then mirrors half of them (lighting is off).
            if not np.array_equal(crop, image):
                np.testing.assert_array_equal(crop[:, ::-1], image)
                flipped += 1
    assert 0 < flipped < 18
    evaluation = build_dataset(_pattern(shards, "validation"), training=False, output_dtype=tf.uint8, **common)
    centred = build_dataset(_pattern(shards, "validation"), training=False, **common)
    for (crops, _), (images, _) in zip(_take(evaluation, 2), _take(centred, 2)):
        assert crops.dtype == np.uint8
        np.testing.assert_array_equal(crops.astype(np.float32) - mean, images)
    with pytest.raises(ValueError, match="Expected output_dtype tf.float32 or tf.uint8. Received: float16"):
        build_dataset(_pattern(shards), training=True, output_dtype=tf.float16, **common)


def test_the_two_builders_are_what_build_dataset_fronts(shards):
    from pipelines import EvalOptions, Source, TrainOptions, build_eval_dataset, build_train_dataset

    source = Source(_pattern(shards))
    direct = build_train_dataset(source, TrainOptions(batch_size=4, image_size=48, seed=5, start_example=8))
    front = build_dataset(_pattern(shards), training=True, batch_size=4, image_size=48, seed=5, start_example=8,
                          crops=1, preprocessing="paper")  # evaluation's keywords at their defaults: ignored
    for (x1, y1), (x2, y2) in zip(_take(direct, 3), _take(front, 3)):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    ten = build_eval_dataset(Source(_pattern(shards, "validation")), EvalOptions(batch_size=3, image_size=48, crops=10))
    assert ten.element_spec[0].shape.as_list() == [None, 10, 48, 48, 3]
    with pytest.raises(ValueError, match="Expected crops to be 1 or 10. Received: crops=5"):
        EvalOptions(batch_size=3, crops=5)
    with pytest.raises(ValueError, match="'caffe' is a single-crop evaluation geometry"):
        EvalOptions(batch_size=3, crops=10, preprocessing="caffe")
    with pytest.raises(ValueError, match="Expected 1 <= --batch_size <= 65536. Received: 0"):
        TrainOptions(batch_size=0)
    # A seedless pipeline draws one seed, used by its crops, flips and order alike.
    assert isinstance(TrainOptions(batch_size=2).seed, int)
