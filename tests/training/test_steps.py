"""The compiled training step (`alexnet_tf.training.steps`) under MirroredStrategy over two
logical CPUs: float16 loss scaling decides from the gradients summed over the replicas."""

import json

import pytest
import tensorflow as tf
import keras

from alexnet_tf.model.optimizer import AllReduceLossScaleOptimizer
from tests.commands import run_command


def _probe(*args):
    # In a process of its own: see tests/training/overflow_probe.py.
    return json.loads(run_command("tests.training.overflow_probe", *args).stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("bad_replica", [0, 1])
def test_under_float16_one_replicas_overflow_skips_the_step_on_every_replica(bad_replica):
    result = _probe(str(bad_replica))
    assert result["replicas"] == 2
    assert result["changed_by_the_overflow"] == []  # no weight, no momentum moved, on any replica
    assert result["scale_ratio"] == 0.5 and result["iterations_after_overflow"] == 0
    # The next, finite step trains, identically on both replicas.
    assert result["finite_step_trained"] and result["replicas_equal"] and result["iterations_after_finite"] == 1


def test_keras_own_loss_scale_optimizer_lets_the_second_replicas_overflow_through():
    # Why the wrapper exists (Keras 3.15): it decides from replica 0's own gradients, so an
    # Inf on replica 1 reaches the summed update. If Keras fixes this, this test says so.
    result = _probe("1", "keras")
    assert result["changed_by_the_overflow"], result


def test_the_wrapper_takes_only_momentum_sgd():
    with pytest.raises(TypeError, match="Expected a MomentumSGD to wrap. Received: Adam"):
        AllReduceLossScaleOptimizer(keras.optimizers.Adam())


def test_device_augmentation_is_the_host_pipelines_with_its_own_draw_per_replica():
    # Each replica flips and lights its share with seeds (run seed + 1 / + 2, step x replicas +
    # replica): the same function and numbers as the host pipeline's normaliser given those
    # seeds, and different draws on different replicas of one step.
    import numpy as np

    from alexnet_tf.training.steps import make_device_inputs
    from pipelines.dataset import DatasetStatistics, make_train_normalizer

    statistics = DatasetStatistics()
    images = tf.constant(np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3)), tf.uint8)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    inputs = make_device_inputs(statistics, seed=7, num_replicas=2, lighting_stddev=0.1)
    same_images = strategy.experimental_distribute_values_from_function(lambda context: images)
    step = 5
    per_replica = strategy.experimental_local_results(
        strategy.run(tf.function(inputs.train), args=(same_images, tf.constant(step, tf.int64))))
    host = make_train_normalizer(statistics, lighting_stddev=0.1)
    for replica, on_device in enumerate(per_replica):
        position = step * 2 + replica
        expected = host(images, tf.constant([[8, position], [9, position]], tf.int64))
        np.testing.assert_allclose(on_device.numpy(), expected.numpy(), rtol=1e-5, atol=1e-3)
    assert not np.allclose(per_replica[0].numpy(), per_replica[1].numpy())
