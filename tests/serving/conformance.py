"""TF Serving's loading path, as a check any test can run on an export.

`tensorflow_model_server` cannot be installed on this project's machines; what it does with a
SavedModel can: TensorFlow's session loader imports the MetaGraph into a Session and runs the
saver's restore op, TF Serving replays the warm-up records, then answers each request by the
SignatureDef's tensor names (`alexnet_tf.serving.session_loader`). `assert_serves_as_tf_serving`
takes those steps and holds every answer against `tf.saved_model.load`'s.
"""

import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from alexnet_tf.serving import session_loader

PHOTOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "photos")


def sample_image_bytes():
    """Real photos (JPEG) and a generated PNG of another shape: what a client sends."""
    images = [open(os.path.join(PHOTOS, name), "rb").read() for name in sorted(os.listdir(PHOTOS))]
    pixels = np.random.default_rng(7).integers(0, 256, size=(90, 150, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return images + [buffer.getvalue()]


def inputs_for(signature_def, seed=0):
    """A batch for each input of `signature_def`, by its dtype and shape."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for key, info in signature_def.inputs.items():
        if info.dtype == tf.string.as_datatype_enum:
            inputs[key] = np.array(sample_image_bytes(), dtype=object)
        elif info.dtype == tf.uint8.as_datatype_enum:
            shape = [3 if dim.size < 0 else dim.size for dim in info.tensor_shape.dim]
            inputs[key] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        else:
            raise AssertionError(f"No sample for input {key!r} of type {tf.as_dtype(info.dtype).name}")
    return inputs


def assert_serves_as_tf_serving(export_path, expected_signatures=("serving_default", "serving_pixels", "features")):
    """Loads `export_path` as TF Serving does, replays every warm-up record, runs every
    signature by its tensor names and asserts each answer equals `tf.saved_model.load`'s:
    floats to 1e-5, top-5 ids and names exactly. Returns {signature: session outputs}."""
    by_object = tf.saved_model.load(export_path).signatures
    answers = {}
    with session_loader.SessionModel(export_path) as served:
        names = sorted(name for name in served.signatures if not name.startswith("__"))
        assert set(expected_signatures) <= set(names), names
        requests = served.warmup_requests()
        assert {name for name, _, _ in requests} == set(names), "a signature without a warm-up record"
        assert served.replay_warmup() == len(requests)
        for name in names:
            inputs = inputs_for(served.signatures[name])
            answer = served.run(name, inputs)
            reference = by_object[name](**{key: tf.constant(value) for key, value in inputs.items()})
            assert set(answer) == set(reference), name
            for key, value in answer.items():
                expected = reference[key].numpy()
                assert value.shape == expected.shape and value.dtype == expected.dtype, (name, key)
                if expected.dtype.kind == "f":
                    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5, err_msg=f"{name}/{key}")
                else:
                    np.testing.assert_array_equal(value, expected, err_msg=f"{name}/{key}")
            answers[name] = answer
    return answers
