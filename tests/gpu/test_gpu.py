"""Checks that need a real GPU: `pytest -m gpu` on a GPU machine (tests/conftest.py leaves
GPUs visible only then). Without a visible GPU each is skipped, saying why.

They compare the GPU's kernels with the CPU's on the same inputs and weights, under each
precision policy the recipes use, run a two-replica step over two GPUs, and a few synthetic
steps of each GPU flagfile through the real command.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf import GroupedConv2D, LocalResponseNormalization
from tests.commands import run_command

GPUS = tf.config.get_visible_devices("GPU")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not GPUS, reason="needs a visible GPU: run `pytest -m gpu` on a GPU machine")]

# Relative tolerances per policy: float16 and bfloat16 round the GPU's inputs and outputs.
POLICIES = {"float32": 1e-4, "mixed_float16": 1e-2, "mixed_bfloat16": 4e-2}


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def _on(device, layer_factory, x, weights=None):
    # Inputs in the policy's compute dtype, as the previous layer hands them over.
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    with tf.device(device):
        inputs = tf.cast(tf.constant(x), compute_dtype)
        layer = layer_factory()
        out = layer(inputs)
        if weights is not None:
            layer.set_weights(weights)
            out = layer(inputs)
        return layer, tf.cast(out, tf.float32).numpy()


def _assert_close(gpu, cpu, tolerance):
    scale = np.abs(cpu).max()
    assert np.abs(gpu - cpu).max() <= tolerance * scale, (np.abs(gpu - cpu).max(), scale)


@pytest.mark.parametrize("policy", list(POLICIES), indirect=True)
def test_native_grouped_convolution_on_the_gpu_equals_the_cpus(policy):
    x = np.random.default_rng(0).normal(size=(4, 27, 27, 96)).astype(np.float32)
    cpu_layer, cpu = _on("/CPU:0", lambda: GroupedConv2D(256, 5, padding="same", groups=2, implementation="towers"), x)
    gpu_layer, gpu = _on("/GPU:0", lambda: GroupedConv2D(256, 5, padding="same", groups=2, implementation="native"),
                         x, weights=cpu_layer.get_weights())
    _assert_close(gpu, cpu, POLICIES[policy])


@pytest.mark.parametrize("policy", list(POLICIES), indirect=True)
def test_tensorflows_lrn_on_the_gpu_equals_the_cpus(policy):
    x = np.random.default_rng(1).normal(0, 30, size=(4, 55, 55, 96)).astype(np.float32)
    _, cpu = _on("/CPU:0", lambda: LocalResponseNormalization(implementation="fused"), x)
    _, gpu = _on("/GPU:0", lambda: LocalResponseNormalization(implementation="native"), x)
    _assert_close(gpu, cpu, POLICIES[policy])


@pytest.mark.skipif(len(GPUS) < 2, reason="needs two visible GPUs")
def test_a_two_replica_step_keeps_the_replicas_equal():
    import types

    from alexnet_tf import build_alexnet
    from alexnet_tf.model.optimizer import MomentumSGD
    from alexnet_tf.training.steps import make_steps

    strategy = tf.distribute.MirroredStrategy(["/gpu:0", "/gpu:1"])
    with strategy.scope():
        model = build_alexnet(10, image_size=224, seed=0)
        optimizer = MomentumSGD(learning_rate=0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
    train_steps, _ = make_steps(model=model, optimizer=optimizer, strategy=strategy,
                                config=types.SimpleNamespace(batch_size=64, jit_compile=True))
    rng = np.random.default_rng(0)
    batch = (rng.normal(0, 50, size=(64, 224, 224, 3)).astype(np.float32), rng.integers(0, 10, 64).astype(np.int32))
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat()))
    sums = train_steps(iterator, tf.constant(3)).numpy()
    assert np.isfinite(sums).all()
    for variable in model.trainable_variables:
        first, second = [v.numpy() for v in variable.value.values]
        np.testing.assert_array_equal(first, second, err_msg=variable.path)


@pytest.mark.parametrize("flagfile", ["flags/alexnet_imagenet.flags", "flags/alexnet_imagenet_8gpu.flags"])
def test_each_gpu_flagfile_trains_a_few_synthetic_steps(flagfile, tmp_path):
    # The recipe as written (strategy, precision, XLA, batch), on synthetic data.
    result = run_command("alexnet_tf.train", f"--flagfile={flagfile}", "--synthetic", "--num_classes=1000",
                         "--epochs=1", "--steps_per_epoch=20", "--log_every_steps=10", "--noexport",
                         f"--model_dir={tmp_path / 'run'}")
    assert "devices: GPU:0" in result.stderr + result.stdout
    assert os.path.isdir(tmp_path / "run" / "checkpoints")
