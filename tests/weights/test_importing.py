"""Importing bvlc_alexnet weights into a run directory (`alexnet_tf.weights.importing`), and
the run's weights written back in that layout."""

import os

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import run_dir
from alexnet_tf.weights import caffe, importing
from tests.weights.caffe_reference import TINY_FC, TINY_FILTERS, caffe_forward, random_caffe_blobs
from pipelines import schema
from pipelines import dataset as datasets
from tests.commands import run_command

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
# The tiny weights' architecture, as flags (a fine-tune must be given the weights' own).
TINY_ARCHITECTURE = [f"--conv_filters={','.join(map(str, TINY_FILTERS))}", f"--fc_units={TINY_FC}"]



def test_imported_run_directory_is_a_run_with_caffes_function(imported_run, weights_file):
    spec = run_dir.read_model_spec(imported_run)
    assert spec["build_alexnet"]["image_size"] == 227 and spec["build_alexnet"]["lrn_bias"] == 1.0
    assert spec["rgb_mean"] == pytest.approx(caffe.CAFFE_RGB_MEAN)
    assert spec["class_names"][:2] == ["class number 0", "class number 1"]
    assert spec[importing.IMPORTED_FROM]["weights"] == os.path.abspath(weights_file)
    model, _, checkpoint = run_dir.load_model(imported_run)
    assert checkpoint.endswith("ckpt-0")
    expected, _ = caffe.import_caffe_npy(weights_file)
    for name in caffe.LAYERS:
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), expected.get_layer(name).kernel.numpy())
    # Its flags.txt names the weights' architecture for a fine-tune.
    flags_text = open(os.path.join(imported_run, "flags.txt")).read()
    assert f"--init_from={imported_run}" in flags_text and "--image_size=227" in flags_text
    assert "--conv_filters=8,16,12,12,8" in flags_text


def test_the_evaluation_pipeline_on_an_imported_run_gives_caffes_logits(imported_run, folder_227):
    # What alexnet_tf.evaluate runs on an imported run: the run's model and its recorded mean,
    # through the evaluation pipeline. Caffe gets the same centre crops, in BGR minus its mean.
    model, spec, _ = run_dir.load_model(imported_run)
    pattern = schema.split_file_pattern(folder_227, "validation")
    images, _ = next(iter(datasets.build_dataset(pattern, training=False, batch_size=6, image_size=227,
                                                 statistics=run_dir.statistics_of(spec))))
    pixels = []
    for record in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))):
        encoded = tf.io.parse_single_example(record, schema.training_feature_spec())[schema.IMAGE_ENCODED]
        pixels.append(datasets.decode_for_eval(encoded, image_size=227).numpy())
    bgr = np.stack(pixels)[..., ::-1].astype(np.float32) - np.asarray(caffe.CAFFE_BGR_MEAN, np.float32)
    expected = caffe_forward(random_caffe_blobs(seed=0), bgr.transpose(0, 3, 1, 2))  # the weights_file blobs
    np.testing.assert_allclose(model(images, training=False).numpy(), expected,
                               atol=2e-4 * np.abs(expected).max(), rtol=1e-4)


def test_import_refuses_a_folder_in_use_and_bad_class_names(weights_file, imported_run, tmp_path):
    before = sorted(os.listdir(imported_run))
    with pytest.raises(importing.ImportWeightsError, match="exists and is not empty"):
        importing.import_weights(weights_file, imported_run)
    assert sorted(os.listdir(imported_run)) == before
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    with pytest.raises(importing.ImportWeightsError, match="names 2 classes; the weights have 7"):
        importing.import_weights(weights_file, str(tmp_path / "new"), class_names_file=str(names))
    assert not (tmp_path / "new").exists()


def test_export_npy_round_trips_and_warns_when_caffe_would_differ(imported_run, weights_file, trained_run, tmp_path):
    out = tmp_path / "again.npy"
    result = run_command("alexnet_tf.export", f"--model_dir={imported_run}", "--format=npy", f"--output={out}")
    assert f"to {out}" in result.stdout and "differs from Caffe" not in result.stderr
    original, again = caffe.read_npy_weights(weights_file), caffe.read_npy_weights(str(out))
    assert sorted(again) == sorted(original)
    for name in caffe.LAYERS:
        for part in (0, 1):
            np.testing.assert_array_equal(again[name][part], original[name][part], err_msg=name)
    model, spec, _ = run_dir.load_model(imported_run)
    with pytest.raises(FileExistsError, match="exists. Pass --overwrite"):
        caffe.export_npy(model, run_dir.network_of(spec), str(out))
    # A run of the paper's network: its weights (conv1 in Caffe's BGR order), and what makes
    # Caffe's network compute another function with them.
    paper = tmp_path / "paper.npy"
    model, spec, _ = run_dir.load_model(trained_run)
    differences = caffe.export_npy(model, run_dir.network_of(spec), str(paper))
    assert "lrn_bias=2.0 (Caffe: 1.0)" in differences and "image_size=64 (Caffe: 227)" in differences
    weights = caffe.read_npy_weights(str(paper))
    np.testing.assert_array_equal(weights["conv1"][0], model.get_layer("conv1").kernel.numpy()[:, :, ::-1, :])
    np.testing.assert_array_equal(weights["fc6"][0], model.get_layer("fc6").kernel.numpy())
