"""The compiled training step (`alexnet_tf.training.steps`) under MirroredStrategy over two
logical CPUs: float16 loss scaling decides from the gradients summed over the replicas."""

import json

import pytest
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
