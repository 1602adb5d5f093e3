"""Run directories are local (or mounted): every command refuses an object-store path before
any work, instead of making a local folder named "gs:"."""

import os
import subprocess
import sys

import pytest

from alexnet_tf import training
from tests.commands import REPO

COMMANDS = [
    ("alexnet_tf.train", ["--model_dir=gs://bucket/run", "--synthetic", "--num_classes=10"], "model_dir"),
    ("alexnet_tf.evaluate", ["--model_dir=runs/a,gs://bucket/run", "--data_dir=data"], "model_dir"),
    ("alexnet_tf.export", ["--model_dir=runs/x", "--export_dir=s3://bucket/export"], "export_dir"),
    ("alexnet_tf.predict", ["--model_dir=gs://bucket/run", "cat.jpg"], "model_dir"),
    ("alexnet_tf.import_weights", ["--weights=bvlc_alexnet.npy", "--model_dir=gs://bucket/run"], "model_dir"),
    ("alexnet_tf.neighbors", ["--model_dir=gs://bucket/run", "--data_dir=data", "q.jpg"], "model_dir"),
    ("alexnet_tf.report", ["--model_dir=gs://bucket/run", "--data_dir=data"], "model_dir"),
]

# Each command's flags parsed as its `app.run` parses them, one command after another in one
# process (each one's flags removed before the next defines its own): the refusal happens
# at parsing, before any work.
_PARSE_EACH = r"""
import importlib, json, sys
from absl import flags
commands = json.loads(sys.argv[1])
errors = {}
for module, args, _ in commands:
    before = set(flags.FLAGS)
    importlib.import_module(module)
    try:
        flags.FLAGS([module, *args])
        errors[module] = None
    except flags.Error as error:
        errors[module] = str(error)
    flags.FLAGS.unparse_flags()
    for added in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, added)
print(json.dumps(errors))
"""


def test_every_command_refuses_an_object_store_path_when_its_flags_are_parsed(tmp_path):
    import json

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", _PARSE_EACH, json.dumps(COMMANDS)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, check=True)
    errors = json.loads(result.stdout.splitlines()[-1])
    for module, _, flag in COMMANDS:
        message = errors[module] or ""
        assert f"--{flag}=" in message and "not a local path" in message and "gcsfuse" in message, (module, message)
    assert os.listdir(tmp_path) == []  # no "gs:" or "s3:" folder, nothing else


def test_the_command_exits_1_with_the_message_before_any_work(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    module, args, flag = COMMANDS[0]
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"--{flag}=" in result.stderr and "not a local path" in result.stderr and "gcsfuse" in result.stderr
    assert os.listdir(tmp_path) == []


def test_the_training_library_refuses_it_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(training.TrainingError, match="local or mounted file system"):
        training.train(training.TrainConfig(model_dir="gs://bucket/run", synthetic=True, num_classes=4))
    assert os.listdir(tmp_path) == []
