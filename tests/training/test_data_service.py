"""The training input through a tf.data service on loopback, servers in their own process."""

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from alexnet_tf import training
from pipelines import build_dataset, schema

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service():
    port = _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.data_service", f"--port={port}", "--dispatcher",
         "--worker_address=127.0.0.1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # "serving; ..." once both servers run
    assert line.startswith("serving"), process.stderr.read()[-2000:]
    yield f"grpc://127.0.0.1:{port}"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]
    assert "servers stopped" in stderr
    assert "run it only on a trusted network" in stderr


def test_batches_through_the_service_cover_each_epoch_once(service, tiny_dataset):
    dataset = build_dataset(schema.split_file_pattern(tiny_dataset, "train"), training=True,
                            batch_size=5, image_size=64, seed=0, data_service=service,
                            data_service_job="test_epochs")
    batches = [(x.numpy(), y.numpy()) for x, y in dataset.take(14)]
    assert all(x.shape == (5, 64, 64, 3) and x.dtype == np.float32 for x, _ in batches)
    labels = np.concatenate([y for _, y in batches])
    np.testing.assert_array_equal(np.bincount(labels[:35]), [7] * 5)
    np.testing.assert_array_equal(np.bincount(labels[35:]), [7] * 5)


def test_training_runs_through_the_service(service, tiny_dataset, tmp_path):
    result = training.train(training.TrainConfig(
        model_dir=str(tmp_path / "run"), data_dir=tiny_dataset, tf_data_service=service,
        image_size=64, conv_filters=(8, 8, 16, 16, 8), fc_units=32, init="he", learning_rate=0.001,
        batch_size=5, epochs=1, steps_per_epoch=4))
    assert result.steps_done == 4 and result.final_metrics["num_examples"] == 15
