"""The cluster of a Slurm job step, for MultiWorkerMirroredStrategy, without a hand-written
TF_CONFIG: one worker per task (rank 0 the chief), each task's GPUs from the allocation,
ports from `PORT_BASE` and the job id (two jobs on a node do not collide).

Built with TensorFlow's `SlurmClusterResolver` (host names from `scontrol show hostnames`,
tasks per node from the step), given what it would otherwise guess wrongly: the GPUs per task
(it runs `nvidia-smi` when not told, and divides by zero for tasks without GPUs) and the ports.
The result is written to TF_CONFIG, which the strategy reads as on any other cluster.
"""

import json
import logging
import os

logger = logging.getLogger(__name__)

# Ports: PORT_BASE + (job id mod JOB_SLOTS) x PORTS_PER_JOB + the task's index on its node.
# A job's tasks on one node take consecutive ports; two jobs share a node's ports only when
# their ids are equal modulo JOB_SLOTS (at most 20000 + 2047 x 16 + 15 = 52767).
PORT_BASE = 20000
JOB_SLOTS = 2048
PORTS_PER_JOB = 16


class SlurmAllocationError(RuntimeError):
    """The flags ask for what the Slurm allocation does not hold; the message says what it holds."""


def job_step_tasks(environ=os.environ):
    """The number of tasks of the Slurm job step this process is a task of; 0 outside a step
    (a batch script itself, before srun, is not a step's task)."""
    if "SLURM_PROCID" not in environ or "SLURM_STEP_NUM_TASKS" not in environ:
        return 0
    return int(environ["SLURM_STEP_NUM_TASKS"])


def port_base(environ=os.environ):
    """The first port of this job's workers on a node."""
    return PORT_BASE + (int(environ.get("SLURM_JOB_ID", "0")) % JOB_SLOTS) * PORTS_PER_JOB


def gpus_per_task(environ=os.environ):
    """The GPUs Slurm gave each task: SLURM_GPUS_PER_TASK (e.g. "2" or "a100:2"), else the
    devices in CUDA_VISIBLE_DEVICES, else none."""
    value = environ.get("SLURM_GPUS_PER_TASK", "")
    if value:
        return int(value.rsplit(":", 1)[-1])
    # Device indices or GPU UUIDs; "-1", "" and Slurm's "NoDevFiles" hide every GPU.
    devices = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return len([d for d in devices if d.isdigit() or d.startswith(("GPU-", "MIG-"))])


def describe_allocation(environ=os.environ):
    """One line: what this job step holds (for errors and the log)."""
    return (f"Slurm job {environ.get('SLURM_JOB_ID', '?')} step {environ.get('SLURM_STEP_ID', '?')}: "
            f"{job_step_tasks(environ)} task(s) on {environ.get('SLURM_STEP_NODELIST', '?')}, "
            f"{gpus_per_task(environ)} GPU(s) per task")


def cluster_config(environ=os.environ):
    """The TF_CONFIG dict of this task: the step's tasks as workers, this task's index."""
    import tensorflow as tf

    gpus = gpus_per_task(environ)
    tasks = job_step_tasks(environ)
    # The resolver splits gpus_per_node among a node's tasks in steps of gpus_per_task: told
    # "one each" on a GPU-less task, it allocates nothing real (auto_set_gpu=False) and does
    # not divide by zero.
    resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
        port_base=port_base(environ), gpus_per_node=max(gpus, 1) * tasks, gpus_per_task=max(gpus, 1),
        auto_set_gpu=False)
    spec = resolver.cluster_spec().as_dict()
    return {"cluster": spec, "task": {"type": resolver.task_type, "index": resolver.task_id}}


def configure(strategy_name, environ=os.environ):
    """Inside a Slurm job step without TF_CONFIG, sets TF_CONFIG from the allocation when the
    strategy is "multi_worker" (or "auto" with several tasks). Returns the TF_CONFIG dict it set,
    or None.

    Raises:
      SlurmAllocationError: --strategy=multi_worker in a step of one task.
    """
    tasks = job_step_tasks(environ)
    if not tasks or "TF_CONFIG" in environ or strategy_name not in ("auto", "multi_worker"):
        return None
    if tasks == 1:
        if strategy_name == "multi_worker":
            raise SlurmAllocationError(
                f"--strategy=multi_worker, but this Slurm job step runs one task ({describe_allocation(environ)}). "
                "Start one task per worker (srun -N NODES --ntasks-per-node=N ...), or use --strategy=auto "
                "(this task's GPUs, mirrored) for one machine.")
        return None
    config = cluster_config(environ)
    environ["TF_CONFIG"] = json.dumps(config)
    logger.info("Cluster from the Slurm allocation (%s): %s; this task is worker %d%s", describe_allocation(environ),
                ", ".join(config["cluster"]["worker"]), config["task"]["index"],
                " (the chief)" if config["task"]["index"] == 0 else "")
    return config
