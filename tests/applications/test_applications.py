"""`alexnet_tf.applications`: the keras.applications conventions, weight sets fetched through
`keras.utils.get_file` (from a file:// origin here, never the network), and each weight set's
own preprocessing reproducing what the original pipeline computed on real photos."""

import dataclasses
import hashlib
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf import applications, load_caffe_npy
from alexnet_tf.applications import alexnet as app
from alexnet_tf.weights import caffe, torchvision
from tests.weights.caffe_reference import TINY_CLASSES

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
TINY_PTH = os.path.join(FIXTURES, "tiny_torchvision_alexnet.pth")


@pytest.fixture(scope="module")
def reference():
    return np.load(os.path.join(FIXTURES, "reference.npz"))


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


@pytest.fixture
def served_torchvision(tmp_path, monkeypatch, keras_home):
    """The "torchvision" weight set served from a file:// origin, with its true SHA-256."""
    origin = tmp_path / "server" / "alexnet-tiny.pth"
    origin.parent.mkdir()
    shutil.copy(TINY_PTH, origin)
    sha256 = hashlib.sha256(origin.read_bytes()).hexdigest()
    weight_set = dataclasses.replace(app.WEIGHT_SETS["torchvision"], file_name="alexnet-tiny.pth",
                                     origin=origin.as_uri(), sha256=sha256)
    monkeypatch.setitem(app.WEIGHT_SETS, "torchvision", weight_set)
    return origin


def test_the_real_weight_sets_are_pinned():
    # torchvision names each file by the first hex digits of its SHA-256, which torch.hub checks
    # (`check_hash`): the pinned hash must be the one the name carries, of the file the origin names.
    tv = app.WEIGHT_SETS["torchvision"]
    name_hash = tv.file_name.rsplit("-", 1)[1].split(".")[0]
    assert len(name_hash) >= 8 and tv.sha256.startswith(name_hash) and len(tv.sha256) == 64
    assert tv.origin.startswith("https://download.pytorch.org/models/") and tv.origin.endswith("/" + tv.file_name)
    assert app.WEIGHT_SETS["bvlc_alexnet"].sha256 is None  # never fetched unverified


def test_torchvision_weights_are_fetched_once_with_their_hash_checked(served_torchvision, keras_home, reference):
    model = applications.AlexNet(weights="torchvision", classes=10)
    cached = keras_home / "models" / "alexnet-tiny.pth"
    assert cached.read_bytes() == served_torchvision.read_bytes()
    probabilities = model(applications.preprocess_input(reference["torchvision_pixels"]), training=False).numpy()
    np.testing.assert_allclose(probabilities, tf.nn.softmax(reference["torchvision_logits"]).numpy(), atol=1e-5)
    # From the cache from now on: the origin can be gone.
    served_torchvision.unlink()
    assert applications.AlexNet(weights="torchvision", classes=10).count_params() == model.count_params()


def test_a_file_that_fails_its_hash_is_refused(served_torchvision, keras_home, monkeypatch):
    wrong = dataclasses.replace(app.WEIGHT_SETS["torchvision"], sha256="0" * 64)
    monkeypatch.setitem(app.WEIGHT_SETS, "torchvision", wrong)
    with pytest.raises(ValueError, match="hash"):
        applications.AlexNet(weights="torchvision", classes=10)


def test_bvlc_alexnet_comes_from_the_keras_cache_and_says_where(keras_home, weights_file, reference):
    with pytest.raises(FileNotFoundError, match=f"{keras_home}/models/bvlc_alexnet.npy is missing.*pass weights=PATH"):
        applications.AlexNet(weights="bvlc_alexnet")
    shutil.copy(weights_file, keras_home / "models" / "bvlc_alexnet.npy")
    model = applications.AlexNet(weights="bvlc_alexnet", classes=TINY_CLASSES, classifier_activation=None)
    assert model.input.shape[1:] == (227, 227, 3)
    # Caffe's input: the warp-and-crop of a photo, BGR minus Caffe's mean, as load_caffe_npy takes it.
    pixels = reference["caffe_pixels"].astype(np.float32)
    x = applications.preprocess_input(pixels, weights="bvlc_alexnet")
    np.testing.assert_allclose(x, pixels[..., ::-1] - np.asarray(caffe.CAFFE_BGR_MEAN, np.float32))
    np.testing.assert_allclose(model(x, training=False).numpy(), load_caffe_npy(weights_file)(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"input_shape` should be \(227, 227, 3\)"):
        applications.AlexNet(weights="bvlc_alexnet", classes=TINY_CLASSES, input_shape=(224, 224, 3))
    features = applications.AlexNet(weights="bvlc_alexnet", include_top=False, input_shape=(224, 224, 3), pooling="max")
    assert features.output.shape == (None, 8)


def test_photos_through_load_image_and_preprocess_input_give_pytorchs_answer(reference):
    model = applications.AlexNet(weights=TINY_PTH, classes=10, classifier_activation=None)
    crops = np.stack([applications.load_image(os.path.join(FIXTURES, "photos", str(name)), weights=TINY_PTH)
                      for name in reference["photos"]])
    assert crops.dtype == np.float32 and crops.shape == (3, 224, 224, 3)
    assert np.abs(crops - reference["torchvision_pixels"]).max() <= 1.0
    logits = model.predict(applications.preprocess_input(crops, weights=TINY_PTH), verbose=0)
    expected = reference["torchvision_logits"]
    # Within a grey level of PIL's crop, the logits stay within 5% of their scale, same top-1.
    assert np.abs(logits - expected).max() < 0.05 * np.abs(expected).max()
    assert logits.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()
    # On PIL's exact crops, PyTorch's logits to 1e-4.
    exact = model.predict(applications.preprocess_input(reference["torchvision_pixels"], weights=TINY_PTH), verbose=0)
    np.testing.assert_allclose(exact, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    with pytest.raises(ValueError, match=r"README.md is not a readable image"):
        applications.load_image(os.path.join(os.path.dirname(FIXTURES), "..", "README.md"), weights=TINY_PTH)


def test_keras_applications_argument_checks():
    with pytest.raises(ValueError, match=r"`weights` argument should be either `None`.*Received: weights='imagenet21k'"):
        applications.AlexNet(weights="imagenet21k")
    with pytest.raises(ValueError, match=r"`pooling` argument should be one of"):
        applications.AlexNet(weights=None, include_top=False, pooling="sum")
    with pytest.raises(ValueError, match=r"Only `None` and `softmax` activations.*relu"):
        applications.AlexNet(weights=TINY_PTH, classes=10, classifier_activation="relu")
    with pytest.raises(ValueError, match=r"`classes` should be 10. Received: classes=1000"):
        applications.AlexNet(weights=TINY_PTH)
    with pytest.raises(ValueError, match=r"input_shape must be \(size, size, 3\)"):
        applications.AlexNet(weights=None, input_shape=(224, 200, 3))
    with pytest.raises(ValueError, match="at least 64x64"):
        applications.AlexNet(weights=None, include_top=False, input_shape=(32, 32, 3))
    # Random init: the paper's network (two towers, LRN), any head.
    model = applications.AlexNet(weights=None, classes=5, classifier_activation="sigmoid", name="mine")
    assert model.name == "mine" and model.output.shape == (None, 5) and model.get_layer("conv2").groups == 2
    assert model.get_layer("predictions").activation.__name__ == "sigmoid"
    # torchvision's adaptive pool takes other sizes with the top, as in PyTorch.
    assert applications.AlexNet(weights=TINY_PTH, classes=10, input_shape=(256, 256, 3)).output.shape == (None, 10)
    pooled = applications.AlexNet(weights=TINY_PTH, include_top=False, pooling="avg")
    assert pooled.output.shape == (None, 16)
    assert applications.AlexNet(weights=TINY_PTH, include_top=False).output.shape == (None, 6, 6, 16)


def test_preprocess_input_is_each_weight_sets_convention():
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    np.testing.assert_allclose(
        applications.preprocess_input(pixels, weights="torchvision"),
        (pixels / 255.0 - np.asarray(torchvision.TORCHVISION_MEAN)) / np.asarray(torchvision.TORCHVISION_STD),
        rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(applications.preprocess_input(pixels, weights="bvlc_alexnet"),
                               [[[[255.0 - 104.00698793, 127.5 - 116.66876762, 0.0 - 122.67891434]]]], rtol=1e-6)
    from pipelines import constants

    np.testing.assert_allclose(applications.preprocess_input(pixels, weights=None),
                               pixels - np.asarray(constants.IMAGENET_RGB_MEAN, np.float32))
    # Tensors in, tensors out; same numbers.
    as_tensor = applications.preprocess_input(tf.constant(pixels), weights="bvlc_alexnet")
    assert tf.is_tensor(as_tensor)
    np.testing.assert_allclose(as_tensor.numpy(), applications.preprocess_input(pixels, weights="bvlc_alexnet"))
    # Symbolic, as Keras' own preprocess_input: a layer of a functional model, same numbers.
    for weights in ("torchvision", "bvlc_alexnet", None):
        inputs = keras.Input((1, 1, 3))
        model = keras.Model(inputs, applications.preprocess_input(inputs, weights=weights))
        np.testing.assert_allclose(model.predict(pixels, verbose=0),
                                   applications.preprocess_input(pixels, weights=weights), rtol=1e-6, atol=1e-5)


def test_decode_predictions_names_wnids_and_both_cranes():
    preds = np.full((2, 1000), 1e-4, np.float32)
    preds[0, [134, 517, 0]] = [0.5, 0.3, 0.1]
    preds[1, 517] = 0.9
    decoded = applications.decode_predictions(preds, top=3)
    assert decoded[0] == [("n02012849", "crane (bird)", pytest.approx(0.5)),
                          ("n03126707", "crane (machine)", pytest.approx(0.3)),
                          ("n01440764", "tench, Tinca tinca", pytest.approx(0.1))]
    assert decoded[1][0][:2] == ("n03126707", "crane (machine)") and len(decoded[1]) == 3
    with pytest.raises(ValueError, match=r"expects a batch of predictions.*shape: \(10,\)"):
        applications.decode_predictions(np.zeros(10))


def test_a_run_directory_is_a_weight_set_with_its_recorded_crop_and_mean(tmp_path, reference):
    from alexnet_tf.weights import importing

    run = str(tmp_path / "torchvision_run")
    importing.import_weights(TINY_PTH, run)
    model = applications.AlexNet(weights=run, classes=10, classifier_activation=None)
    photo = os.path.join(FIXTURES, "photos", str(reference["photos"][0]))
    crop = applications.load_image(photo, weights=run)
    assert np.abs(crop - reference["torchvision_pixels"][0]).max() <= 1.0  # the run's "torchvision" crop
    x = applications.preprocess_input(reference["torchvision_pixels"], weights=run)
    np.testing.assert_allclose(x, reference["torchvision_pixels"] - np.asarray(torchvision.TORCHVISION_RGB_MEAN,
                                                                                np.float32), rtol=1e-6)
    expected = reference["torchvision_logits"]
    np.testing.assert_allclose(model(x, training=False).numpy(), expected, rtol=0, atol=1e-4 * np.abs(expected).max())
