"""AlexNetSpec: the network as one value, stored, compared and built."""

import json

import numpy as np
import pytest

from alexnet_tf import AlexNetSpec, build_alexnet, run_dir
from alexnet_tf.weights import caffe
from pipelines.dataset import DatasetStatistics

TINY = dict(conv_filters=(8, 8, 8, 8, 8), fc_units=16)


def test_defaults_are_the_papers():
    spec = AlexNetSpec()
    assert (spec.num_classes, spec.image_size, spec.groups, spec.dropout) == (1000, 224, 2, 0.5)
    # Section 3.3: k = 2, alpha = 1e-4 (n = 5, beta = 0.75 are the layer's own).
    assert (spec.lrn, spec.lrn_bias, spec.lrn_alpha) == (True, 2.0, 1e-4)
    assert spec.conv_filters == (96, 256, 384, 384, 256) and spec.fc_units == 4096
    assert spec.dropout_inputs_of == ("fc7", "fc8") and spec.conv1_padding == (1, 2)
    assert (spec.weight_decay, spec.init, spec.adaptive_pool_size) == (5e-4, "paper", None)


def test_the_keyword_form_builds_the_same_network_as_the_spec():
    spec = AlexNetSpec(num_classes=7, image_size=64, lrn_bias=1.0, **TINY)
    by_spec = build_alexnet(spec, seed=3)
    by_keywords = build_alexnet(7, image_size=64, lrn_bias=1.0, seed=3, **TINY)
    by_num_classes_keyword = build_alexnet(num_classes=7, image_size=64, lrn_bias=1.0, seed=3, **TINY)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    for model in (by_keywords, by_num_classes_keyword):
        assert [layer.name for layer in model.layers] == [layer.name for layer in by_spec.layers]
        np.testing.assert_array_equal(model(x), by_spec(x))
    assert by_spec.get_layer("norm1").get_config()["bias"] == 1.0


def test_a_spec_and_keywords_together_are_refused():
    with pytest.raises(ValueError, match=r"not both.*spec.replace\(image_size=...\)"):
        build_alexnet(AlexNetSpec(**TINY), image_size=64)


def test_lists_compare_equal_to_tuples_and_json_round_trips():
    spec = AlexNetSpec(num_classes=5, image_size=227, conv1_padding=[0, 0], dropout_inputs_of=["fc6", "fc7"],
                       conv_filters=[8, 8, 8, 8, 8], fc_units=16, adaptive_pool_size=6)
    assert spec.conv1_padding == (0, 0) and spec.conv_filters == (8, 8, 8, 8, 8)
    again = AlexNetSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec and hash(again) == hash(spec)
    assert spec.differences(again) == []
    assert spec.differences(spec.replace(groups=1, fc_units=32)) == [("groups", 2, 1), ("fc_units", 16, 32)]
    assert spec.differences(spec.replace(groups=1), ["fc_units"]) == []


def test_a_spec_written_before_a_field_existed_takes_its_default_and_a_newer_field_is_refused():
    # What a run of an earlier version recorded: no lrn_alpha, conv1_padding, dropout_inputs_of,
    # adaptive_pool_size (they did not exist yet; the network was built with their defaults).
    old = {"num_classes": 10, "image_size": 64, "groups": 2, "dropout": 0.5, "lrn": True, "lrn_bias": 2.0,
           "weight_decay": 0.0005, "init": "paper", "conv_filters": [8, 8, 8, 8, 8], "fc_units": 16}
    assert AlexNetSpec.from_json(old) == AlexNetSpec(num_classes=10, image_size=64, **TINY)
    with pytest.raises(ValueError, match="run/model_spec.json names pool_overlap.*Upgrade alexnet_tf"):
        AlexNetSpec.from_json(dict(old, pool_overlap=False), source="run/model_spec.json")


def test_model_spec_json_keeps_its_key_and_an_old_run_still_loads(tmp_path):
    network = AlexNetSpec(num_classes=3, image_size=64, **TINY)
    model = build_alexnet(network, seed=0)
    run_dir.write_model_spec(str(tmp_path), network=network, class_names=("a", "b", "c"),
                             statistics=DatasetStatistics())
    record = json.loads((tmp_path / "model_spec.json").read_text())
    assert record["build_alexnet"] == network.to_json()  # every field, under the file's own key
    # As a run written before AlexNetSpec had conv1_padding and the torchvision fields left it.
    for field in ("conv1_padding", "dropout_inputs_of", "adaptive_pool_size", "lrn_alpha"):
        del record["build_alexnet"][field]
    (tmp_path / "model_spec.json").write_text(json.dumps(record))
    import tensorflow as tf

    tf.train.Checkpoint(model=model).write(str(tmp_path / "checkpoints" / "ckpt-0"))
    loaded, spec, _ = run_dir.load_model(str(tmp_path), checkpoint=str(tmp_path / "checkpoints" / "ckpt-0"))
    assert run_dir.network_of(spec) == network
    x = np.ones((1, 64, 64, 3), np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))


def test_each_weight_reader_returns_a_spec():
    weights = {name: (np.zeros(shape, np.float32), np.zeros(shape[-1], np.float32)) for name, shape in {
        "conv1": (11, 11, 3, 8), "conv2": (5, 5, 4, 8), "conv3": (3, 3, 8, 8), "conv4": (3, 3, 4, 8),
        "conv5": (3, 3, 4, 8), "fc6": (6 * 6 * 8, 16), "fc7": (16, 16), "fc8": (16, 4)}.items()}
    network = caffe.network_of_weights(weights)
    assert isinstance(network, AlexNetSpec)
    assert network == AlexNetSpec(num_classes=4, image_size=227, lrn_bias=1.0, lrn_alpha=2e-5, conv1_padding=(0, 0),
                                  **TINY)
    assert caffe.differences_from_caffe(network) == []
    assert caffe.differences_from_caffe(AlexNetSpec(**TINY)) == [
        "image_size=224 (Caffe: 227)", "lrn_bias=2.0 (Caffe: 1.0)", "lrn_alpha=0.0001 (Caffe: 2e-05)",
        "conv1_padding=(1, 2) (Caffe: (0, 0))"]
