"""`model_spec.json`: what a run's network and data are, written by training and
`alexnet_tf.import_weights`, read by everything that rebuilds the run's model (evaluation,
export, prediction, neighbours, a resume, a fine-tune)."""

import json
import os

import tensorflow as tf

from alexnet_tf.model.alexnet import build_alexnet, complete_build_kwargs
from alexnet_tf.run_dir.layout import MODEL_SPEC_FILE, latest_checkpoint


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


def build_kwargs_of(spec):
    """The `build_alexnet` arguments of a model spec."""
    return complete_build_kwargs(spec["build_alexnet"])


def load_model(model_dir, checkpoint=None):
    """(model with restored weights, model spec, checkpoint path) of a run directory."""
    spec = read_model_spec(model_dir)
    model = build_alexnet(**build_kwargs_of(spec))
    path = checkpoint or latest_checkpoint(model_dir)
    tf.train.Checkpoint(model=model).read(path).expect_partial()
    return model, spec, path
