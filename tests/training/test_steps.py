"""The compiled training step (`alexnet_tf.training.steps`) under MirroredStrategy over the
two logical CPUs that tests/conftest.py makes."""

import types

import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf import build_alexnet
from alexnet_tf.model.optimizer import AllReduceLossScaleOptimizer, MomentumSGD
from alexnet_tf.training.steps import make_steps

BATCH = 4  # 2 per replica


@pytest.fixture
def float16_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _replica_values(variable):
    """The variable's copy on each replica's device."""
    copies = tf.distribute.get_strategy().experimental_local_results(variable.value)
    values = [v.numpy() for v in getattr(variable.value, "values", copies)]
    assert len(values) == 2, variable.path
    return values


@pytest.mark.parametrize("bad_replica", [0, 1])
def test_under_float16_one_replicas_overflow_skips_the_step_on_every_replica(float16_policy, bad_replica):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build_alexnet(5, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=16, seed=0, dropout=0.0)
        optimizer = AllReduceLossScaleOptimizer(MomentumSGD(learning_rate=0.01, momentum=0.9))
        optimizer.build(model.trainable_variables)
    train_steps, _ = make_steps(model=model, optimizer=optimizer, strategy=strategy,
                                config=types.SimpleNamespace(batch_size=BATCH, jit_compile=False))
    rng = np.random.default_rng(0)
    images = rng.normal(0, 50, size=(2, BATCH, 64, 64, 3)).astype(np.float32)
    # The first batch overflows on one replica only: an Inf pixel in that replica's half.
    images[0, 2 * bad_replica, 10, 10, 0] = np.inf
    labels = np.array([[0, 1, 2, 3], [0, 1, 2, 3]], np.int32)
    iterator = iter(tf.data.Dataset.from_tensor_slices((images, labels)))
    with strategy.scope():
        before = [_replica_values(v) for v in model.trainable_variables]
    scale = float(optimizer.dynamic_scale.numpy())

    train_steps(iterator, tf.constant(1))
    for variable, values in zip(model.trainable_variables, before):
        for replica, (now, then) in enumerate(zip(_replica_values(variable), values)):
            np.testing.assert_array_equal(now, then, err_msg=f"{variable.path} changed on replica {replica}")
    assert float(optimizer.dynamic_scale.numpy()) == scale / 2
    assert int(optimizer.inner_optimizer.iterations.numpy()) == 0

    # The next, finite step trains, identically on both replicas.
    train_steps(iterator, tf.constant(1))
    kernel = model.get_layer("fc8").kernel
    first, second = _replica_values(kernel)
    assert np.isfinite(first).all() and not np.array_equal(first, before[-2][0])
    np.testing.assert_array_equal(first, second)
    assert int(optimizer.inner_optimizer.iterations.numpy()) == 1


def test_the_wrapper_takes_only_momentum_sgd():
    with pytest.raises(TypeError, match="Expected a MomentumSGD to wrap. Received: Adam"):
        AllReduceLossScaleOptimizer(keras.optimizers.Adam())
