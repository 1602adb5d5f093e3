"""One float16 training step with an Inf on one replica, then a finite one, over two logical
CPUs; prints what happened as JSON. Run by tests/training/test_steps.py in a process of its
own: on TensorFlow 2.21, a second MirroredStrategy over the same devices in one process can
collide with the first one's collective instance keys ("Shape mismatch in the collective
instance 100"), so each strategy here gets a fresh process.

    python -m tests.training.overflow_probe BAD_REPLICA [keras]
"""

import json
import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from alexnet_tf import build_alexnet  # noqa: E402
from alexnet_tf.model.optimizer import AllReduceLossScaleOptimizer, MomentumSGD  # noqa: E402
from alexnet_tf.training import strategies  # noqa: E402
from alexnet_tf.training.steps import make_steps  # noqa: E402

BATCH = 4  # 2 per replica


def _replica_values(strategy, variable):
    return [v.numpy() for v in strategy.experimental_local_results(variable.value)]


def probe(bad_replica, wrapper=AllReduceLossScaleOptimizer):
    keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = strategies.create_strategy("mirrored", num_virtual_cpus=2)
    with strategy.scope():
        model = build_alexnet(5, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=16, seed=0, dropout=0.0)
        optimizer = wrapper(MomentumSGD(learning_rate=0.01, momentum=0.9))
        optimizer.build(model.trainable_variables)
    train_steps, _ = make_steps(model=model, optimizer=optimizer, strategy=strategy,
                                config=types.SimpleNamespace(batch_size=BATCH, jit_compile=False))
    images = np.random.default_rng(0).normal(0, 50, size=(2, BATCH, 64, 64, 3)).astype(np.float32)
    images[0, 2 * bad_replica, 10, 10, 0] = np.inf  # the first batch overflows on one replica only
    labels = np.array([[0, 1, 2, 3], [0, 1, 2, 3]], np.int32)
    # The strategy's distributed input: replica r gets examples 2r and 2r + 1 of each batch.
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((images, labels))))
    before = [_replica_values(strategy, v) for v in model.trainable_variables]
    scale = float(optimizer.dynamic_scale.numpy())
    train_steps(iterator, tf.constant(1))
    after_bad = [_replica_values(strategy, v) for v in model.trainable_variables]
    changed = sorted({f"{v.path} on replica {r}" for v, old, new in zip(model.trainable_variables, before, after_bad)
                      for r, (a, b) in enumerate(zip(old, new)) if not np.array_equal(a, b, equal_nan=False)})
    result = {"replicas": len(before[0]), "changed_by_the_overflow": changed,
              "scale_ratio": float(optimizer.dynamic_scale.numpy()) / scale,
              "iterations_after_overflow": int(optimizer.inner_optimizer.iterations.numpy())}
    train_steps(iterator, tf.constant(1))
    first, second = _replica_values(strategy, model.get_layer("fc8").kernel)
    result.update(finite_step_trained=bool(np.isfinite(first).all() and not np.array_equal(first, before[-2][0])),
                  replicas_equal=bool(np.array_equal(first, second)),
                  iterations_after_finite=int(optimizer.inner_optimizer.iterations.numpy()))
    return result


if __name__ == "__main__":
    wrapper = keras.optimizers.LossScaleOptimizer if sys.argv[2:] == ["keras"] else AllReduceLossScaleOptimizer
    print(json.dumps(probe(int(sys.argv[1]), wrapper)))
