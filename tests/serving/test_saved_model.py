import glob
import io
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import run_dir
from alexnet_tf.serving import saved_model
from pipelines import dataset as datasets
from tests.serving.conformance import assert_serves_as_tf_serving

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _jpeg(height, width, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png(height, width, mode="RGB", seed=1):
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_declaring(width, height):
    """A valid-looking PNG header that declares a huge image, with almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 200


@pytest.fixture(scope="module")
def export_path(trained_run):
    return sorted(glob.glob(os.path.join(trained_run, "export", "[0-9]*")))[-1]


def _keras_probabilities(trained_run, images_bytes):
    """The Keras model on the evaluation pipeline's preprocessing of the same bytes."""
    model, spec, _ = run_dir.load_model(trained_run)
    statistics = run_dir.statistics_of(spec)
    pixels = tf.stack([datasets.decode_for_eval(tf.constant(b), image_size=64) for b in images_bytes])
    images = tf.cast(pixels, tf.float32) - tf.constant(statistics.rgb_mean, tf.float32)
    return tf.nn.softmax(model(images, training=False)).numpy()


def test_reloads_without_project_code_and_matches_the_keras_model(trained_run, export_path, tmp_path):
    images = [_jpeg(80, 120, 0), _png(100, 70, "RGB", 1), _png(90, 90, "L", 2), _jpeg(64, 64, 3)]
    np.save(tmp_path / "images.npy", np.array(images, dtype=object), allow_pickle=True)
    script = f"""
import sys, json, numpy as np, tensorflow as tf
serve = tf.saved_model.load({export_path!r}).signatures["serving_default"]
images = list(np.load({str(tmp_path / 'images.npy')!r}, allow_pickle=True))
batch = serve(image_bytes=tf.constant(images))
single = [serve(image_bytes=tf.constant([b]))["probabilities"][0].numpy().tolist() for b in images]
project = [m for m in sys.modules if m.split(".")[0] in ("alexnet_tf", "pipelines")]
print(json.dumps({{"batch": batch["probabilities"].numpy().tolist(), "single": single,
                  "classes": batch["classes"].numpy().tolist(), "project": project,
                  "names": [n.decode() for n in batch["class_names"].numpy()[0]]}}))
"""
    # A TensorFlow runtime without oneDNN, as on some serving builds: the export must not
    # need it (no grouped convolutions).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="", TF_ENABLE_ONEDNN_OPTS="0")
    result = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["project"] == []
    expected = _keras_probabilities(trained_run, images)
    np.testing.assert_allclose(out["batch"], expected, atol=1e-4)
    np.testing.assert_allclose(out["single"], out["batch"], atol=1e-5)  # batch independence
    assert np.array(out["classes"]).shape == (4, 5)
    np.testing.assert_array_equal(np.array(out["classes"])[:, 0], expected.argmax(axis=1))
    assert all(name.startswith("n0000000") for name in out["names"])  # names from dataset_info


def test_bad_inputs_are_invalid_argument_and_the_model_keeps_serving(export_path):
    serve = tf.saved_model.load(export_path).signatures["serving_default"]
    good = _jpeg(70, 90)
    gif = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gif, format="GIF")
    cases = {"empty": b"", "not an image": b"hello world" * 10, "truncated jpeg": good[:300],
             "gif": gif.getvalue()}
    for name, data in cases.items():
        with pytest.raises(tf.errors.InvalidArgumentError):
            serve(image_bytes=tf.constant([data]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit is 64000000 pixels"):
        serve(image_bytes=tf.constant([_png_declaring(16000, 16000)]))
    # Still serving.
    assert serve(image_bytes=tf.constant([good]))["probabilities"].shape == (1, 5)


def test_pixel_signature_matches_bytes_signature(export_path):
    loaded = tf.saved_model.load(export_path)
    data = _jpeg(80, 100, 5)
    pixels = datasets.decode_for_eval(tf.constant(data), image_size=64)[tf.newaxis]
    from_pixels = loaded.signatures["serving_pixels"](images=pixels)
    from_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant([data]))
    np.testing.assert_allclose(from_pixels["probabilities"], from_bytes["probabilities"], atol=1e-6)
    assert loaded.signatures["serving_pixels"].structured_input_signature[1]["images"].shape.as_list() == [None, 64, 64, 3]


def test_features_signature_gives_the_models_fc7_after_relu(trained_run, export_path):
    features = tf.saved_model.load(export_path).signatures["features"]
    assert features.structured_input_signature[1]["image_bytes"].shape.as_list() == [None]
    images = [_jpeg(80, 120, 0), _png(100, 70, "RGB", 1), _jpeg(64, 64, 3)]
    fc7 = features(image_bytes=tf.constant(images))["fc7"].numpy()
    model, spec, _ = run_dir.load_model(trained_run)
    assert fc7.shape == (3, spec["build_alexnet"]["fc_units"]) and fc7.dtype == np.float32
    pixels = tf.stack([datasets.decode_for_eval(tf.constant(b), image_size=64) for b in images])
    inputs = tf.cast(pixels, tf.float32) - tf.constant(spec["rgb_mean"], tf.float32)
    fc7_layer = tf.keras.Model(model.input, model.get_layer("fc7").output)
    np.testing.assert_allclose(fc7, fc7_layer(inputs, training=False).numpy(), rtol=1e-4, atol=1e-4)
    assert fc7.min() >= 0 and fc7.max() > 0  # after the ReLU, and not all dead
    one = features(image_bytes=tf.constant(images[1:2]))["fc7"].numpy()
    np.testing.assert_allclose(one[0], fc7[1], rtol=1e-5, atol=1e-5)


def test_versions_are_atomic_and_never_overwritten(trained_run, tmp_path):
    model, spec, _ = run_dir.load_model(trained_run)
    kwargs = dict(class_names=spec["class_names"], statistics=run_dir.statistics_of(spec))
    base = str(tmp_path / "export")
    first = saved_model.export_model(model, export_dir=base, **kwargs)
    second = saved_model.export_model(model, export_dir=base, **kwargs)
    assert (os.path.basename(first), os.path.basename(second)) == ("1", "2")
    with pytest.raises(saved_model.ExportError, match="exists. Pass --overwrite"):
        saved_model.export_model(model, export_dir=base, version=1, **kwargs)
    stamp = os.path.getmtime(os.path.join(first, "saved_model.pb"))
    saved_model.export_model(model, export_dir=base, version=1, overwrite=True, **kwargs)
    assert os.path.getmtime(os.path.join(first, "saved_model.pb")) >= stamp
    assert sorted(os.listdir(base)) == ["1", "2"]  # no temporaries left beside the versions


def test_export_cli_writes_the_version_asked_and_refuses_to_overwrite(trained_run, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    args = [sys.executable, "-m", "alexnet_tf.export", f"--model_dir={trained_run}",
            f"--export_dir={tmp_path / 'e'}", "--version=7"]
    subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True, timeout=180)
    assert os.listdir(tmp_path / "e") == ["7"]
    assert_serves_as_tf_serving(str(tmp_path / "e" / "7"))
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1 and "exists. Pass --overwrite" in result.stderr


def test_warmup_requests_are_real_requests_for_every_signature(export_path):
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(os.path.join(export_path, saved_model.WARMUP_FILE)))
    signatures = []
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        signatures.append(request.model_spec.signature_name)
        if "image_bytes" in request.inputs:
            images = tf.make_ndarray(request.inputs["image_bytes"])
            assert len(images) >= 1 and all(tf.io.is_jpeg(image) for image in images)
        else:
            assert tf.make_ndarray(request.inputs["images"]).shape[1:] == (64, 64, 3)
    # Batches of one and of several for the default signature, at least one for each other.
    assert signatures.count("serving_default") >= 2
    assert set(signatures) == {"serving_default", "serving_pixels", "features"}


def test_predict_cli_prints_the_top5(trained_run, export_path, tmp_path):
    image, other, bad = tmp_path / "image.jpg", tmp_path / "other.jpg", tmp_path / "bad.jpg"
    image.write_bytes(_jpeg(90, 120))
    other.write_bytes(_jpeg(70, 80))
    bad.write_bytes(b"not an image")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # Batches of two: the bad file fails its batch, which then goes image by image.
    result = subprocess.run([sys.executable, "-m", "alexnet_tf.predict", f"--saved_model={export_path}",
                             "--batch_size=2", str(image), str(tmp_path / "missing.jpg"), str(bad), str(other)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=True)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == str(image) and lines[6].startswith(f"{bad}: cannot read") and lines[7] == str(other)
    assert len(lines) == 13 and f"{tmp_path / 'missing.jpg'}: no such file" in result.stderr
    for first in (1, 8):
        probabilities = [float(line.split()[1]) for line in lines[first:first + 5]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1, abs=1e-3)


def test_saved_model_cli_finds_no_file_reading_ops(export_path):
    import shutil

    cli = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([cli, "scan", "--dir", export_path], env=env, capture_output=True,
                            text=True, timeout=120, check=True)
    assert "does not contain the default denylisted ops" in result.stdout + result.stderr


def test_export_graph_has_no_xla_and_no_grouped_convolution(export_path):
    # TF Serving refuses XLA-compiled functions unless started with
    # --xla_cpu_compilation_enabled, and CPU builds without oneDNN cannot run grouped
    # convolutions: training uses both, the export (portable_kernels) neither.
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export_path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    functions = saved_model.meta_graphs[0].graph_def.library.function
    convolutions = 0
    for function in functions:
        assert not function.attr["_XlaMustCompile"].b, function.signature.name
        shapes = {node.name: node.attr["_output_shapes"].list.shape for node in function.node_def}

        def shape(tensor_name):  # "node:output_arg:index" inside a function body, or "node"
            parts = tensor_name.split(":")
            index = int(parts[-1]) if len(parts) > 1 else 0
            return [d.size for d in shapes[parts[0]][index].dim]

        for node in function.node_def:
            assert node.op not in ("XlaLaunch", "_XlaCompile", "_XlaRun"), node.name
            if node.op == "Conv2D":
                convolutions += 1
                # The input's channels are the filter's input depth: not a grouped convolution.
                assert shape(node.input[0])[-1] == shape(node.input[1])[2], node.name
    assert convolutions > 0


@pytest.mark.parametrize("mixed_precision", ["float16", "bfloat16"])
def test_a_mixed_precision_run_exports_its_float32_model(tiny_dataset, tmp_path, mixed_precision):
    """The export of a float16 or bfloat16 run (as the train command makes it after training,
    here even with the mixed policy still set globally) is the float32 model of its checkpoint,
    and answers through TF Serving's loading path."""
    import keras

    from alexnet_tf import training

    run = tmp_path / "run"
    training.train(training.TrainConfig(
        model_dir=str(run), data_dir=tiny_dataset, image_size=64, conv_filters=(8, 8, 16, 16, 8), fc_units=32,
        init="he", batch_size=4, epochs=1, steps_per_epoch=2, mixed_precision=mixed_precision,
        evaluate_at_end=False))
    keras.mixed_precision.set_global_policy(f"mixed_{mixed_precision}")
    try:
        path = saved_model.export_run(saved_model.ExportConfig(model_dir=str(run))).path
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert path.endswith("/1")
    assert_serves_as_tf_serving(path)
    images = tf.constant([_jpeg(80, 120, 0), _png(100, 70, "RGB", 1), _jpeg(64, 64, 3)])
    served = tf.saved_model.load(path).signatures["serving_default"](image_bytes=images)
    np.testing.assert_allclose(served["probabilities"].numpy(), _keras_probabilities(str(run), images.numpy()),
                               rtol=1e-5, atol=1e-6)


def test_an_imported_torchvision_run_serves_with_torchvisions_crop(tmp_path):
    # The run directory records "torchvision"; its SavedModel crops image_bytes that way: on
    # real photos, PyTorch's top-1 and logits within a grey level's worth of PIL's crop.
    from alexnet_tf.weights import importing

    fixtures = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
    reference = np.load(os.path.join(fixtures, "reference.npz"))
    model_dir = str(tmp_path / "torchvision_run")
    importing.import_weights(os.path.join(fixtures, "tiny_torchvision_alexnet.pth"), model_dir)
    path = saved_model.export_run(saved_model.ExportConfig(model_dir=model_dir)).path
    photos = [open(os.path.join(fixtures, "photos", str(name)), "rb").read() for name in reference["photos"]]
    assert_serves_as_tf_serving(path)
    served = tf.saved_model.load(path).signatures["serving_default"](image_bytes=tf.constant(photos))
    expected = tf.nn.softmax(reference["torchvision_logits"]).numpy()
    assert np.abs(served["probabilities"].numpy() - expected).max() < 0.02
    assert served["classes"].numpy()[:, 0].tolist() == expected.argmax(axis=1).tolist()
    # Exactly the model on the evaluation pipeline's torchvision crop (what evaluate runs).
    model, spec, _ = run_dir.load_model(model_dir)
    crops = np.stack([datasets.decode_for_eval(tf.constant(p), image_size=224, preprocessing="torchvision").numpy()
                      for p in photos]).astype(np.float32)
    logits = model(crops - np.asarray(spec["rgb_mean"], np.float32), training=False)
    np.testing.assert_allclose(served["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=1e-6)
