"""Run directories are local (or mounted): every command refuses an object-store path before
any work, instead of making a local folder named "gs:"."""

import os
import subprocess
import sys

import pytest

from alexnet_tf import training

COMMANDS = [
    ("alexnet_tf.train", ["--model_dir=gs://bucket/run", "--synthetic", "--num_classes=10"], "model_dir"),
    ("alexnet_tf.evaluate", ["--model_dir=gs://bucket/run", "--data_dir=data"], "model_dir"),
    ("alexnet_tf.export", ["--model_dir=runs/x", "--export_dir=s3://bucket/export"], "export_dir"),
    ("alexnet_tf.predict", ["--model_dir=gs://bucket/run", "cat.jpg"], "model_dir"),
    ("alexnet_tf.import_weights", ["--weights=bvlc_alexnet.npy", "--model_dir=gs://bucket/run"], "model_dir"),
    ("alexnet_tf.neighbors", ["--model_dir=gs://bucket/run", "--data_dir=data", "q.jpg"], "model_dir"),
]


@pytest.mark.parametrize("module, args, flag", COMMANDS, ids=[c[0].split(".")[1] for c in COMMANDS])
def test_every_command_refuses_an_object_store_path_before_any_work(module, args, flag, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"--{flag}=" in result.stderr and "not a local path" in result.stderr and "gcsfuse" in result.stderr
    assert os.listdir(tmp_path) == []  # no "gs:" or "s3:" folder, nothing else


def test_the_training_library_refuses_it_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(training.TrainingError, match="local or mounted file system"):
        training.train(training.TrainConfig(model_dir="gs://bucket/run", synthetic=True, num_classes=4))
    assert os.listdir(tmp_path) == []
