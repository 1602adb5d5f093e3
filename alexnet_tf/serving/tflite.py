"""A run's model as a TensorFlow Lite flatbuffer, for phones and edge devices.

The `.tflite` holds the SavedModel's pixel signature: uint8 images [N, S, S, 3] (already
cropped RGB) in, `probabilities` [N, C] float32 out, the training mean subtracted inside.
It is traced inside `portable_kernels()`: TensorFlow's LRN (TFLite's builtin
LOCAL_RESPONSE_NORMALIZATION, a float op), the two towers as plain convolutions, Keras'
Dense; so it needs only TFLite's builtin ops.

`quantize="dynamic"` stores the weights as int8 (dynamic-range quantization: about a quarter
of the size; activations stay float, so no calibration data is needed).
"""

import os

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from alexnet_tf.model.layers import portable_kernels
from pipelines import schema

QUANTIZATIONS = ("none", "dynamic")


def convert_to_tflite(model, *, rgb_mean, image_size, quantize="none"):
    """The flatbuffer bytes of `model` with its preprocessing (see the module docstring)."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"Expected quantize to be one of {QUANTIZATIONS}. Received: {quantize!r}")
    mean = tf.constant(np.asarray(rgb_mean, np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")])
    def serve_pixels(images):
        logits = model(tf.cast(images, tf.float32) - mean, training=False)
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32))}

    with portable_kernels():
        concrete = serve_pixels.get_concrete_function()
    # The weights frozen into constants first: given Keras 3's variables, the converter keeps
    # them as resource variables (VAR_HANDLE / READ_VARIABLE) that the flatbuffer never
    # initialises, and the interpreter computes NaN. (TensorFlow's own converter freezes with
    # this function on its older path.)
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def write_tflite(path, flatbuffer, *, overwrite=False):
    """Writes the flatbuffer to `path` atomically (`pipelines.schema.write_bytes_atomically`)."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists. Pass --overwrite to replace it, or another --output.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    schema.write_bytes_atomically(path, flatbuffer)
    return path
