"""Training on a real Slurm (issue 26): the cluster from the allocation, no TF_CONFIG.

Marked `slurm`; `.ci/slurm-setup` (run by `.ci/run`) starts a single-node Slurm on this
machine. Without one (no `sinfo` answering) the test is skipped, saying why.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import tensorflow as tf

from alexnet_tf.training import slurm
from tests.commands import REPO
from tests.training.test_multi_worker import two_worker_dataset  # noqa: F401  (a fixture: a shard per worker)

TINY_FLAGS = ["--image_size=64", "--conv_filters=8,8,16,16,8", "--fc_units=32", "--init=he",
              "--learning_rate=0.001", "--log_every_steps=1", "--batch_size=4"]


def _slurm_up():
    if not shutil.which("srun") or not shutil.which("sinfo"):
        return "no srun here (.ci/slurm-setup installs a single-node Slurm as root)"
    result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if result.returncode or not any(state.startswith(("idle", "mix", "alloc")) for state in result.stdout.split()):
        return f"Slurm does not answer (sinfo: {result.stdout.strip() or result.stderr.strip()})"
    return None


def test_the_allocation_is_read_as_the_resolver_and_the_flags_need():
    environ = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_ID": "4097",
               "SLURM_GPUS_PER_TASK": "a100:2"}
    assert slurm.job_step_tasks(environ) == 2 and slurm.gpus_per_task(environ) == 2
    assert slurm.port_base(environ) == slurm.PORT_BASE + 1 * slurm.PORTS_PER_JOB  # 4097 mod 2048
    assert slurm.port_base({"SLURM_JOB_ID": "2047"}) + slurm.PORTS_PER_JOB - 1 <= 65535
    assert slurm.gpus_per_task({"CUDA_VISIBLE_DEVICES": "0,3"}) == 2
    assert slurm.gpus_per_task({"CUDA_VISIBLE_DEVICES": "-1"}) == 0
    assert slurm.gpus_per_task({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}) == 0
    assert slurm.job_step_tasks({"SLURM_JOB_ID": "5"}) == 0  # a batch script, not a step's task
    one = {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_JOB_ID": "7"}
    with pytest.raises(slurm.SlurmAllocationError, match="one task.*srun -N"):
        slurm.configure("multi_worker", dict(one))
    assert slurm.configure("auto", dict(one)) is None  # one task: this machine's devices
    given = dict(environ, TF_CONFIG="{}")
    assert slurm.configure("multi_worker", given) is None  # a hand-written TF_CONFIG wins


def _wait_for_backup(process, model_dir, *, after=-1, timeout=300):
    """The step of the first backup newer than step `after`, while `process` runs."""
    deadline = time.monotonic() + timeout
    while True:
        latest = tf.train.latest_checkpoint(str(model_dir / "backup"))
        step = int(latest.rsplit("-", 1)[1]) if latest else -1
        if step > after:
            return step
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no backup after step {after} within {timeout} s"
        time.sleep(0.1)


def _job_id(name):
    job = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert len(job) == 1, job
    return job[0]


@pytest.mark.slurm
@pytest.mark.slow
def test_srun_trains_two_workers_survives_a_kill_and_a_scancel_term_and_resumes(two_worker_dataset, tmp_path):
    why = _slurm_up()
    if why:
        pytest.skip(why)
    model_dir = tmp_path / "run"
    name = f"alexnet-test-{uuid.uuid4().hex[:8]}"
    command = ["srun", f"--job-name={name}", "-N1", "-n2", "--kill-on-bad-exit=1", sys.executable, "-m",
               "alexnet_tf.train", f"--data_dir={two_worker_dataset}", f"--model_dir={model_dir}",
               "--strategy=multi_worker", "--epochs=1", "--steps_per_epoch=40", "--backup_every_steps=1",
               *TINY_FLAGS]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)

    def start():
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # 1. The job step killed outright (SIGKILL: nothing saved at the kill) after a backup.
    process = start()
    killed_after = _wait_for_backup(process, model_dir)
    subprocess.run(["scancel", "--signal=KILL", _job_id(name)], check=True)
    _, stderr = process.communicate(timeout=300)
    assert "Cluster from the Slurm allocation" in stderr and "this task is worker 0 (the chief)" in stderr
    assert "MultiWorkerMirroredStrategy, 2 replicas, 2 worker(s)" in stderr
    resume_at = int(tf.train.latest_checkpoint(str(model_dir / "backup")).rsplit("-", 1)[1])
    assert killed_after <= resume_at < 40
    # 2. The same command resumes there; scancel --signal=TERM (a preemption) once it backed up
    # again: every worker saves at the same step and exits.
    process = start()
    _wait_for_backup(process, model_dir, after=resume_at)
    subprocess.run(["scancel", "--signal=TERM", _job_id(name)], check=True)
    _, stderr = process.communicate(timeout=300)
    assert stderr.count(f"epoch 0 / step {resume_at}") == 2, stderr[-3000:]  # both workers resumed
    assert "SIGTERM: saved the training state" in stderr, stderr[-3000:]
    step = int(tf.train.latest_checkpoint(str(model_dir / "backup")).rsplit("-", 1)[1])
    assert resume_at < step < 40
    # 3. The same command again (a requeued job) finishes from the saved step.
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count(f"epoch 0 / step {step}") == 2
    assert json.loads((model_dir / "train_results.json").read_text())["steps_done"] == 40
    # One series of checkpoints, one flags.txt, one export, the lock the chief's alone.
    assert sorted(os.listdir(model_dir)) == [".train.lock", "backup", "checkpoints", "export", "flags.txt", "logs",
                                             "model_spec.json", "train_results.json"]
    assert sorted(os.listdir(model_dir / "export")) == ["1"]
