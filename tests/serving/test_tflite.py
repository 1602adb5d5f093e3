"""`python -m alexnet_tf.export --format=tflite`: the pixel signature as TensorFlow Lite."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import AlexNetSpec, build_alexnet
from alexnet_tf import run_dir
from alexnet_tf.serving import saved_model
from pipelines import DatasetStatistics, schema
from pipelines import dataset as datasets
from tests.commands import run_command


def _validation_pixels(tiny_dataset):
    """The tiny validation split as the export's pixel input: centre crops, uint8 [15, 64, 64, 3]."""
    spec = schema.feature_spec()
    images = [datasets.decode_for_eval(tf.io.parse_single_example(r, spec)[schema.IMAGE_ENCODED], image_size=64)
              for r in tf.data.TFRecordDataset(sorted(glob.glob(schema.split_file_pattern(tiny_dataset, "validation"))))]
    return np.stack([i.numpy() for i in images])


def _run_tflite(path, pixels):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    (entry,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(entry["index"], list(pixels.shape))
    interpreter.allocate_tensors()
    assert entry["dtype"] == np.uint8
    interpreter.set_tensor(entry["index"], pixels)
    interpreter.invoke()
    (output,) = interpreter.get_output_details()
    return interpreter.get_tensor(output["index"])


def _builtin_ops(path):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    return {op["op_name"] for op in interpreter._get_ops_details()}  # noqa: SLF001  (no public listing)


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """A run directory whose weights dominate its size (fc 512): for the quantized size."""
    model_dir = str(tmp_path_factory.mktemp("wide") / "run")
    network = AlexNetSpec(num_classes=5, image_size=64, conv_filters=(16, 32, 32, 32, 32), fc_units=512, init="he")
    model = build_alexnet(network, seed=0)
    run_dir.write_model_spec(model_dir, network=network, class_names=(), statistics=DatasetStatistics())
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), os.path.join(model_dir, run_dir.CHECKPOINTS_DIR),
                               max_to_keep=1, checkpoint_name="ckpt").save(checkpoint_number=0)
    return model_dir


def test_tflite_equals_the_saved_models_pixel_signature(trained_run, tiny_dataset, tmp_path):
    result = run_command("alexnet_tf.export", f"--model_dir={trained_run}", "--format=tflite",
                         f"--output={tmp_path / 'alexnet.tflite'}")
    assert "as TensorFlow Lite (none quantization)" in result.stdout
    pixels = _validation_pixels(tiny_dataset)
    lite = _run_tflite(tmp_path / "alexnet.tflite", pixels)
    export = saved_model.export_run(saved_model.ExportConfig(model_dir=trained_run, export_dir=str(tmp_path / "sm")))
    served = tf.saved_model.load(export.path).signatures["serving_pixels"](images=tf.constant(pixels))
    assert lite.shape == (15, 5)
    np.testing.assert_allclose(lite, served["probabilities"].numpy(), rtol=1e-4, atol=1e-6)
    ops = _builtin_ops(tmp_path / "alexnet.tflite")
    assert "LOCAL_RESPONSE_NORMALIZATION" in ops and not any("FLEX" in op or "CUSTOM" in op for op in ops), ops


def test_dynamic_quantization_is_a_quarter_the_size_with_the_same_top1(wide_run, tiny_dataset):
    plain = saved_model.export_run(saved_model.ExportConfig(model_dir=wide_run, format="tflite")).path
    dynamic = saved_model.export_run(saved_model.ExportConfig(model_dir=wide_run, format="tflite",
                                                              quantize="dynamic")).path
    assert os.path.basename(plain) == "alexnet.tflite" and os.path.basename(dynamic) == "alexnet_dynamic.tflite"
    assert os.path.getsize(dynamic) < 0.3 * os.path.getsize(plain), (os.path.getsize(dynamic), os.path.getsize(plain))
    pixels = _validation_pixels(tiny_dataset)
    full, quantized = _run_tflite(plain, pixels), _run_tflite(dynamic, pixels)
    np.testing.assert_array_equal(quantized.argmax(axis=1), full.argmax(axis=1))
    assert not np.array_equal(quantized, full)  # int8 weights: close, not identical
    with pytest.raises(FileExistsError, match="exists. Pass --overwrite"):
        saved_model.export_run(saved_model.ExportConfig(model_dir=wide_run, format="tflite"))
