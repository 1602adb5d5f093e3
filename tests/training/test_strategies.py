"""Strategies by name: a GPU recipe where TensorFlow sees no GPU stops before any work, and a
run says which devices it trains on."""

import os

import pytest
import tensorflow as tf

from alexnet_tf.training import strategies
from tests.commands import run_command

NO_GPU = not tf.config.list_physical_devices("GPU")
TINY = ["--image_size=64", "--conv_filters=8,8,16,16,8", "--fc_units=32", "--batch_size=4", "--epochs=1",
        "--steps_per_epoch=2", "--synthetic", "--num_classes=10", "--noexport"]


@pytest.mark.skipif(not NO_GPU, reason="TensorFlow sees a GPU here")
def test_the_gpu_recipe_without_a_gpu_stops_naming_the_install(tmp_path):
    run = tmp_path / "run"
    result = run_command("alexnet_tf.train", "--flagfile=flags/alexnet_imagenet_8gpu.flags", *TINY,
                         f"--model_dir={run}", check=False)
    assert result.returncode == 1
    assert "TensorFlow sees no GPU" in result.stderr and "pip install -e '.[gpu]'" in result.stderr
    assert "--strategy=default" in result.stderr
    assert not run.exists()  # before any work


def test_the_gpu_recipe_runs_on_the_cpu_with_strategy_default(tmp_path):
    result = run_command("alexnet_tf.train", "--flagfile=flags/alexnet_imagenet_8gpu.flags", "--strategy=default",
                         *TINY, f"--model_dir={tmp_path / 'run'}")
    assert "Training with strategy default strategy, 1 replicas, 1 worker(s); devices: " in result.stderr
    assert (tmp_path / "run" / "train_results.json").exists()


def test_a_run_names_its_devices():
    # tests/conftest.py split the CPU in two: an explicit CPU split is a request for CPU replicas.
    mirrored = strategies.create_strategy("mirrored")
    assert strategies.describe(mirrored) == "MirroredStrategy, 2 replicas, 1 worker(s); devices: CPU:0, CPU:1"
    assert strategies.describe(strategies.create_strategy("default")).endswith(
        "devices: CPU:0" if NO_GPU else "devices: GPU:0")


def test_the_gpu_extra_brings_tensorflow_with_cuda():
    import configparser

    setup = configparser.ConfigParser()
    setup.read(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "setup.cfg"))
    assert "tensorflow[and-cuda]" in setup["options.extras_require"]["gpu"]
    assert strategies.GPU_INSTALL_COMMAND == "pip install -e '.[gpu]'"
