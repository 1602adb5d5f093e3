"""Each weight set's crop (`pipelines.preprocessing`) against what its original pipeline
computed on real photos: torchvision's transforms on PIL images, and Caffe's OpenCV data
path (tests/fixtures/make_fixtures.py wrote both)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from pipelines import dataset as datasets
from pipelines import preprocessing, schema

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


@pytest.fixture(scope="module")
def reference():
    return np.load(os.path.join(FIXTURES, "reference.npz"))


def _photo(name):
    with open(os.path.join(FIXTURES, "photos", name), "rb") as f:
        return f.read()


def _crop(name, convention, size):
    return datasets.decode_for_eval(tf.constant(_photo(name)), image_size=size, preprocessing=convention).numpy()


@pytest.mark.parametrize("convention, key, size", [("torchvision", "torchvision_pixels", 224),
                                                   ("caffe", "caffe_pixels", 227)])
def test_crops_match_the_original_pipeline_within_a_grey_level(reference, convention, key, size):
    for name, expected in zip(reference["photos"], reference[key]):
        actual = _crop(str(name), convention, size)
        assert actual.shape == expected.shape == (size, size, 3) and actual.dtype == np.uint8
        difference = np.abs(actual.astype(int) - expected.astype(int))
        # PIL and OpenCV resize in fixed point; TensorFlow in float: at most one grey level apart.
        assert difference.max() <= 1, name
        assert difference.mean() < 0.25, name


def test_the_conventions_are_not_interchangeable(reference):
    # The check above can fail: another geometry on the same photo is far off.
    photo = str(reference["photos"][0])  # portrait: the warp and the shorter-side resize differ most
    # The paper's crop frames the same centre 224/256 as torchvision's but resamples otherwise
    # (the centre square of the original, then resized): close, yet not within a grey level.
    paper = _crop(photo, "paper", 224).astype(int)
    assert np.abs(paper - reference["torchvision_pixels"][0].astype(int)).max() > 8
    warped = _crop(photo, "caffe", 227).astype(int)
    shorter_side = _crop(photo, "torchvision", 227).astype(int)
    assert np.abs(warped - reference["caffe_pixels"][0].astype(int)).max() <= 1
    assert np.abs(shorter_side - reference["caffe_pixels"][0].astype(int)).mean() > 5


def test_torchvision_crop_offsets_and_sizes_follow_python_rounding():
    # 300 x 457: Resize(256) -> 256 x int(256 * 457 / 300) = 389; CenterCrop(224) offsets
    # int(round(16.0)) = 16 and int(round(82.5)) = 82 (halves round to even).
    image = tf.reshape(tf.range(300 * 457 * 3) % 251, [300, 457, 3])
    image = tf.cast(image, tf.uint8)
    crop = preprocessing.torchvision_crop(image, 224)
    assert crop.shape == (224, 224, 3)
    resized = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, [256, 389], antialias=True)), 0, 255), tf.uint8)
    np.testing.assert_array_equal(crop.numpy(), resized.numpy()[16:240, 82:306])
    assert preprocessing.resize_side("torchvision", 448) == 512 and preprocessing.resize_side("caffe", 227) == 256


def test_the_evaluation_pipeline_takes_a_convention(tmp_path, reference):
    # Shards of the photos at their original size (convert --resize_shorter=0), evaluated as
    # torchvision preprocesses: the batches are the reference crops minus the mean.
    shard = tmp_path / "validation-00000-of-00001"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for label, name in enumerate(reference["photos"]):
            writer.write(schema.make_example(encoded=_photo(str(name)), label=label, synset=f"c{label}", text="",
                                             height=1, width=1, filename=str(name)))
    statistics = datasets.DatasetStatistics(rgb_mean=(10.0, 20.0, 30.0))
    images, labels = next(iter(datasets.build_dataset(str(shard), training=False, batch_size=3, image_size=224,
                                                      statistics=statistics, preprocessing="torchvision")))
    expected = reference["torchvision_pixels"].astype(np.float32) - np.asarray([10.0, 20.0, 30.0], np.float32)
    assert np.abs(images.numpy() - expected).max() <= 1.0
    assert labels.numpy().tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="single-crop evaluation geometry"):
        datasets.build_dataset(str(shard), training=False, batch_size=3, crops=10, statistics=statistics,
                               preprocessing="caffe")
    with pytest.raises(ValueError, match="Unknown preprocessing 'pil'. Expected one of paper, caffe, torchvision"):
        datasets.build_dataset(str(shard), training=False, batch_size=3, statistics=statistics, preprocessing="pil")
