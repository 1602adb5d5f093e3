"""The README's quickstart, end to end through the real command line."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quickstart_generates_trains_evaluates_exports_and_reuses_its_data(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "alexnet_tf.train", "--flagfile=flags/quickstart.flags",
               f"--generate_data={tmp_path / 'data'}", f"--model_dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = float(re.search(r"accuracy (\d\.\d+)", result.stdout).group(1))
    assert accuracy > 0.5, result.stdout  # 10 classes: chance is 0.1
    assert glob.glob(str(tmp_path / "run" / "export" / "1" / "saved_model.pb"))
    info = json.loads((tmp_path / "data" / "shards" / "dataset_info.json").read_text())
    assert info["splits"]["train"]["num_examples"] == 600
    assert info["splits"]["validation"]["num_examples"] == 200
    # A second run reuses the generated data and resumes the finished run.
    again = subprocess.run(command + ["--epochs=10"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Reusing the generated dataset" in again.stderr
    assert "Resuming from" in again.stderr
    # The command exports after a run that trained (the chief only); a finished run's rerun
    # trains nothing and exports nothing new.
    assert sorted(os.listdir(tmp_path / "run" / "export"))[0] == "1"
