"""Shared test set-up: quiet TensorFlow, and two logical CPUs for the distribution tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402  (after the environment above)

# Split the CPU into two logical devices before any test touches TensorFlow, so the tests
# can run MirroredStrategy over two replicas on this machine, as TensorFlow's own do.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
