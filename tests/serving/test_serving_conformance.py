"""Every kind of export answers through TF Serving's loading path (the session loader: restore
op, warm-up replay, signatures by tensor names) exactly as through `tf.saved_model.load`.

The other kinds of run are checked where they are made: a float16 and a bfloat16 run in
test_saved_model (the end-of-training export and the command's), the imported torchvision run
there too, the fine-tuned run with frozen layers in tests/training/test_start.
"""

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import build_alexnet
from alexnet_tf.serving import saved_model, session_loader
from tests.serving.conformance import assert_serves_as_tf_serving, sample_image_bytes


@pytest.fixture(scope="module")
def export_path(trained_run):
    return sorted(glob.glob(os.path.join(trained_run, "export", "[0-9]*")))[-1]


def test_a_trained_runs_export_serves_through_the_session_loader(export_path):
    answers = assert_serves_as_tf_serving(export_path)
    assert answers["serving_default"]["probabilities"].shape == (4, 5)
    assert answers["serving_default"]["class_names"][0, 0].startswith(b"n0000000")
    assert answers["features"]["fc7"].shape == (4, 32)


def test_an_imported_caffe_runs_export_serves_through_the_session_loader(imported_run, tmp_path):
    path = saved_model.export_run(saved_model.ExportConfig(model_dir=imported_run, export_dir=str(tmp_path))).path
    answers = assert_serves_as_tf_serving(path)
    assert answers["serving_default"]["class_names"][0, 0].startswith(b"class number ")  # its class names
    assert answers["serving_pixels"]["probabilities"].shape[1] == 7


def test_the_session_loader_sees_the_keras_3_trap_that_tf_saved_model_load_hides(tmp_path):
    """A tf.Module holding a Keras 3 model, saved as the export once was: the object loader
    answers, TF Serving's path finds no value for the model's variables."""
    model = build_alexnet(5, image_size=64, conv_filters=(8, 8, 16, 16, 8), fc_units=32)
    module = tf.Module()
    module.model = model
    module.serve = tf.function(lambda images: {"logits": model(images, training=False)},
                               input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.float32, name="images")])
    path = str(tmp_path / "untracked")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
    images = np.zeros((1, 64, 64, 3), np.float32)
    assert tf.saved_model.load(path).signatures["serving_default"](images=images)["logits"].shape == (1, 5)
    with session_loader.SessionModel(path) as served:
        with pytest.raises(tf.errors.FailedPreconditionError, match="Could not find variable"):
            served.run("serving_default", {"images": images})


def test_an_export_that_would_not_serve_is_not_published(trained_run, tmp_path, monkeypatch):
    from alexnet_tf import run_dir

    model, spec, _ = run_dir.load_model(trained_run)
    signatures = saved_model.ServingModule.signatures

    def untracked(module):  # the export as it was before the variables were tracked
        traced = signatures(module)
        del module.served_variables
        return traced

    monkeypatch.setattr(saved_model.ServingModule, "signatures", untracked)
    base = tmp_path / "export"
    with pytest.raises(saved_model.ExportError, match="session loader.*Could not find variable.*nothing was published"):
        saved_model.export_model(model, export_dir=str(base), statistics=run_dir.statistics_of(spec))
    assert os.listdir(base) == []  # no version, no temporary


def test_session_model_refuses_requests_tf_serving_would_refuse(export_path):
    with session_loader.SessionModel(export_path) as served:
        with pytest.raises(session_loader.ServingLoadError, match="has no signature 'classify'"):
            served.run("classify", {})
        with pytest.raises(session_loader.ServingLoadError, match=r"takes inputs \['image_bytes'\]"):
            served.run("serving_default", {"images": np.zeros((1, 64, 64, 3), np.uint8)})
        # An empty signature name is TF Serving's serving_default; an output filter fetches less.
        out = served.run("", {"image_bytes": np.array(sample_image_bytes()[:1], dtype=object)},
                         output_filter=("classes",))
        assert list(out) == ["classes"] and out["classes"].shape == (1, 5)


def test_saved_model_cli_run_answers_on_an_npy_of_jpeg_bytes(export_path, tmp_path):
    """README's check of an export without a server: saved_model_cli run, which loads through
    the session loader as TF Serving does."""
    photos = sample_image_bytes()[:2]
    np.save(tmp_path / "b.npy", np.array(photos))  # fixed-width bytes: no pickle
    cli = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([cli, "run", "--dir", export_path, "--tag_set", "serve", "--signature_def",
                             "serving_default", "--inputs", f"image_bytes={tmp_path / 'b.npy'}",
                             "--outdir", str(tmp_path / "out")], env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    served = tf.saved_model.load(export_path).signatures["serving_default"](image_bytes=tf.constant(photos))
    np.testing.assert_allclose(np.load(tmp_path / "out" / "probabilities.npy"), served["probabilities"].numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "classes.npy"), served["classes"].numpy())
