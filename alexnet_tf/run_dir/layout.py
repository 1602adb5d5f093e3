"""The run directory's layout: the names of what a run writes (WORKSPACE.md draws the tree),
where its checkpoints are, and the rule that it lives on a local or mounted file system."""

import os

import tensorflow as tf

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


def latest_checkpoint(model_dir):
    """The newest epoch checkpoint, else the newest backup; error if there is none."""
    for folder in (CHECKPOINTS_DIR, BACKUP_DIR):
        path = tf.train.latest_checkpoint(os.path.join(model_dir, folder))
        if path:
            return path
    raise FileNotFoundError(f"No checkpoint in {model_dir}/{CHECKPOINTS_DIR} or /{BACKUP_DIR}.")


def has_checkpoint(model_dir):
    """Whether model_dir holds an epoch checkpoint or a backup."""
    return any(tf.train.get_checkpoint_state(os.path.join(model_dir, folder))
               for folder in (CHECKPOINTS_DIR, BACKUP_DIR))
