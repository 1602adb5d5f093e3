"""Learning curves from a run's own records: its TensorBoard events (the loss and errors the
training loop wrote) and the learning-rate reductions its checkpoint records."""

import dataclasses
import glob
import os

import numpy as np
import tensorflow as tf

from alexnet_tf import run_dir


@dataclasses.dataclass(frozen=True)
class EpochCurves:
    """Per epoch (1..E): training and validation top-1/top-5 error (NaN where not recorded),
    and the epochs after which the learning rate was divided."""

    epochs: tuple
    train_top1: tuple
    train_top5: tuple
    validation_top1: tuple
    validation_top5: tuple
    reduction_epochs: tuple


def _scalars(folder):
    """{tag: {step: value}} of the events in `folder`; a step written twice (a resumed run
    repeats the steps after its last checkpoint) keeps the later value."""
    values = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("tensor") and not value.tensor.string_val:
                    number = float(tf.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    number = float(value.simple_value)
                else:
                    continue
                values.setdefault(value.tag, {})[int(event.step)] = number
    return values


def _reduction_steps(model_dir):
    try:
        checkpoint = run_dir.latest_checkpoint(model_dir)
    except FileNotFoundError:
        return []
    reader = tf.train.load_checkpoint(checkpoint)
    keys = [key for key in reader.get_variable_to_shape_map() if key.endswith("reduction_steps/.ATTRIBUTES/VARIABLE_VALUE")]
    return [int(step) for step in reader.get_tensor(keys[0])] if keys else []


def read_curves(model_dir):
    """The `EpochCurves` of a training run, or None when it has no records (imported weights)."""
    logs = os.path.join(model_dir, "logs")
    train, validation = _scalars(os.path.join(logs, "train")), _scalars(os.path.join(logs, "validation"))
    ends = {int(epoch): step for step, epoch in train.get("epoch", {}).items()}  # epoch -> its last step
    if not ends:
        return None
    epochs = tuple(sorted(ends))

    def per_epoch(series, mean):
        out = []
        for epoch in epochs:
            start, end = ends.get(epoch - 1, 0), ends[epoch]
            points = [value for step, value in series.items() if start < step <= end]
            out.append(float(np.mean(points)) if mean and points else float(series.get(end, np.nan))
                       if not mean else np.nan)
        return tuple(out)

    reductions = _reduction_steps(model_dir)
    return EpochCurves(
        epochs=epochs,
        train_top1=per_epoch(train.get("top1_error", {}), True),
        train_top5=per_epoch(train.get("top5_error", {}), True),
        validation_top1=per_epoch(validation.get("top1_error", {}), False),
        validation_top5=per_epoch(validation.get("top5_error", {}), False),
        reduction_epochs=tuple(epoch for epoch in epochs if ends[epoch] in reductions))
