"""The run directory: its layout (the names below; WORKSPACE.md draws it), and how to rebuild
its model and its data facts.

Training (and `alexnet_tf.import_weights`) writes `model_spec.json` (the `build_alexnet`
arguments, class names and the training mean); evaluation, export, prediction and
neighbours rebuild the same network from it and restore a checkpoint into it.
"""

import fcntl
import json
import os
import socket
import time

import tensorflow as tf

from alexnet_tf.model.alexnet import build_alexnet, complete_build_kwargs

MODEL_SPEC_FILE = "model_spec.json"
FLAGS_FILE = "flags.txt"
RESULTS_FILE = "train_results.json"
EXPORT_DIR = "export"
NPY_WEIGHTS_FILE = "alexnet_weights.npy"  # python -m alexnet_tf.export --format=npy
TFLITE_FILE = "alexnet.tflite"  # --format=tflite
TFLITE_DYNAMIC_FILE = "alexnet_dynamic.tflite"  # --format=tflite --quantize=dynamic
# Held (flock) by the trainer writing the run; names it (host, pid) for a second one.
LOCK_FILE = ".train.lock"
CHECKPOINTS_DIR = "checkpoints"
BACKUP_DIR = "backup"


def check_local_path(path, flag="--model_dir"):
    """ValueError unless `path` is on a local or mounted file system.

    Run directories are written with `os` and `open`: atomic renames (every checkpoint-side
    file, export versions), `flock` (one trainer per run) and appends need a POSIX file system;
    an object store (gs://, s3://) has none of them, and `os` would make a local folder named
    "gs:". Mount a bucket (gcsfuse, s3fs), or write locally and copy.
    """
    if path and "://" in str(path):
        raise ValueError(
            f"{flag}={path} is not a local path: run directories and their files must be on a local or "
            "mounted file system (they rely on atomic renames and file locks, which object stores lack). "
            "Mount the bucket (e.g. gcsfuse) and pass the mounted path, or write locally and copy.")


def write_model_spec(model_dir, *, build_kwargs, class_names, statistics, preprocessing="paper", extra=None):
    """Writes model_spec.json; `extra` adds keys (e.g. where imported weights came from).
    `preprocessing` names the evaluation crop the weights need (`pipelines.preprocessing`)."""
    from pipelines import preprocessing as conventions
    from pipelines import schema

    os.makedirs(model_dir, exist_ok=True)
    schema.write_json_atomically(os.path.join(model_dir, MODEL_SPEC_FILE), {
        **(extra or {}),
        "build_alexnet": complete_build_kwargs(build_kwargs),
        "class_names": list(class_names),
        "class_ids": list(statistics.class_ids),
        "rgb_mean": list(statistics.rgb_mean),
        "rgb_eigval": list(statistics.rgb_eigval),
        "rgb_eigvec": [list(row) for row in statistics.rgb_eigvec],
        "label_offset": statistics.label_offset,
        "preprocessing": conventions.check_preprocessing(preprocessing),
    })


def read_model_spec(model_dir):
    path = os.path.join(model_dir, MODEL_SPEC_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} is missing: --model_dir must be a run directory written by alexnet_tf.train.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def statistics_of(spec):
    from pipelines.dataset import DatasetStatistics

    return DatasetStatistics(rgb_mean=tuple(spec["rgb_mean"]), rgb_eigval=tuple(spec["rgb_eigval"]),
                             rgb_eigvec=tuple(map(tuple, spec["rgb_eigvec"])),
                             label_offset=spec.get("label_offset", 0),
                             num_classes=spec["build_alexnet"]["num_classes"],
                             class_names=tuple(spec["class_names"]), class_ids=tuple(spec.get("class_ids", ())))


def preprocessing_of(spec):
    """The evaluation crop a run's weights need: "paper" (every trained run, and specs from
    before the key existed), "caffe" or "torchvision" (imported weights)."""
    return spec.get("preprocessing", "paper")


def latest_checkpoint(model_dir):
    """The newest epoch checkpoint, else the newest backup; error if there is none."""
    for folder in (CHECKPOINTS_DIR, BACKUP_DIR):
        path = tf.train.latest_checkpoint(os.path.join(model_dir, folder))
        if path:
            return path
    raise FileNotFoundError(f"No checkpoint in {model_dir}/{CHECKPOINTS_DIR} or /{BACKUP_DIR}.")


def build_kwargs_of(spec):
    """The `build_alexnet` arguments of a model spec."""
    return complete_build_kwargs(spec["build_alexnet"])


def has_checkpoint(model_dir):
    """Whether model_dir holds an epoch checkpoint or a backup."""
    return any(tf.train.get_checkpoint_state(os.path.join(model_dir, folder))
               for folder in (CHECKPOINTS_DIR, BACKUP_DIR))


def load_model(model_dir, checkpoint=None):
    """(model with restored weights, model spec, checkpoint path) of a run directory."""
    spec = read_model_spec(model_dir)
    model = build_alexnet(**build_kwargs_of(spec))
    path = checkpoint or latest_checkpoint(model_dir)
    tf.train.Checkpoint(model=model).read(path).expect_partial()
    return model, spec, path


class RunDirInUseError(RuntimeError):
    """Another process is training into the run directory; the message names it."""


class RunDirLock:
    """The one-trainer lock of a run directory: an exclusive `flock` on model_dir/.train.lock.

    The kernel releases it when its process ends, however it ends (SIGKILL, out of memory),
    so a lock left by a killed trainer never blocks a resume; a live holder makes `acquire`
    fail at once with its host and pid. (`flock` is local to a machine: on a file system
    shared between machines, NFS included, it may not exclude a trainer on another host.)
    """

    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, LOCK_FILE)
        self._file = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirInUseError(
                f"{os.path.dirname(self.path)} is in use by a trainer ({holder}). Wait for it to end, "
                "stop it, or train into another --model_dir.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"host {socket.gethostname()}, pid {os.getpid()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
