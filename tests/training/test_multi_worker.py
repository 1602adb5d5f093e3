"""MultiWorkerMirroredStrategy with real processes and TF_CONFIG on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from pipelines import conversion, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_FLAGS = ["--image_size=64", "--conv_filters=8,8,16,16,8", "--fc_units=32", "--init=he",
              "--learning_rate=0.001", "--log_every_steps=1"]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def two_worker_dataset(tmp_path_factory):
    """Shards enough for two workers: 4 training and 2 validation shards."""
    root = tmp_path_factory.mktemp("two_workers")
    synthetic.write_image_folder(root / "train", num_classes=4, images_per_class=6, seed=0)
    synthetic.write_image_folder(root / "val", num_classes=4, images_per_class=3, seed=1,
                                 flat_with_labels=str(root / "labels.txt"))
    for split, folder, shards, extra in (("train", "train", 4, {}),
                                         ("validation", "val", 2, {"labels_file": str(root / "labels.txt")})):
        conversion.convert_split(conversion.ConvertConfig(
            input_dir=str(root / folder), output_dir=str(root / "shards"), split=split,
            resize_shorter=73, num_shards=shards, workers=1, progress=False, **extra))
    return str(root / "shards")


def _start_workers(model_dir, data_dir, extra_flags, count=2):
    ports = _free_ports(count)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(count):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        command = [sys.executable, "-m", "alexnet_tf.train", f"--data_dir={data_dir}",
                   f"--model_dir={model_dir}", "--strategy=multi_worker", *TINY_FLAGS, *extra_flags]
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    return processes


def _backup_step(model_dir):
    """The step of the newest backup in model_dir, -1 if none (the state file is written
    atomically after the checkpoint it names)."""
    latest = tf.train.latest_checkpoint(str(model_dir / "backup"))
    return int(latest.rsplit("-", 1)[1]) if latest else -1


@pytest.mark.slow
def test_a_dead_worker_makes_the_other_fail_quickly(two_worker_dataset, tmp_path):
    model_dir = tmp_path / "run"
    # 40 steps: far more than the 5 before the kill; a resume keeps --steps_per_epoch (it
    # fixes the data stream), so the restarted cluster trains the rest of them.
    flags = ["--epochs=1", "--steps_per_epoch=40", "--batch_size=4", "--backup_every_steps=5"]
    processes = _start_workers(model_dir, two_worker_dataset, flags)
    # Kill worker 1 once the cluster has trained and backed up 5 steps (the event the resume
    # below needs), however long this machine takes to get there.
    deadline = time.monotonic() + 300
    while _backup_step(model_dir) < 5:
        assert time.monotonic() < deadline, "no backup at step >= 5 within 300 s"
        assert all(p.poll() is None for p in processes), processes[0].communicate()[1][-3000:]
        time.sleep(0.1)
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = processes[0].communicate(timeout=300)
    waited = time.monotonic() - killed_at
    processes[1].communicate()
    assert processes[0].returncode not in (0, None)
    assert waited < 90, f"the surviving worker took {waited:.0f} s to fail"
    assert "rerun every worker with the same command" in stderr
    # Restarting every worker with the same command resumes from the last backup.
    step = _backup_step(model_dir)
    assert 5 <= step < 40
    processes = _start_workers(model_dir, two_worker_dataset, flags)
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
        assert f"epoch 0 / step {step}" in stderr
        assert "MultiWorkerMirroredStrategy, 2 replicas, 2 worker(s)" in stderr
        assert "over 12 images" in stdout  # every validation image once across both workers
    assert json.loads((model_dir / "train_results.json").read_text())["steps_done"] == 40
    # Worker 0 alone wrote the run directory: one lock, one export (tests/training/test_slurm.py
    # checks the same of two workers under srun).
    assert sorted(os.listdir(model_dir / "export")) == ["1"]
    assert sorted(os.listdir(model_dir)) == [".train.lock", "backup", "checkpoints", "export", "flags.txt", "logs",
                                             "model_spec.json", "train_results.json"]
