"""`model_spec.json`: what a run's network and data are, written by training and
`alexnet_tf.import_weights`, read by everything that rebuilds the run's model (evaluation,
export, prediction, neighbours, a resume, a fine-tune)."""

import json
import os

import tensorflow as tf

from alexnet_tf.model.alexnet import build_alexnet
from alexnet_tf.model.spec import AlexNetSpec
from alexnet_tf.run_dir.layout import MODEL_SPEC_FILE, latest_checkpoint


# The key of the network (an `AlexNetSpec`'s fields, every one): the builder's name, kept from
# the runs written before the spec was a type.
NETWORK_KEY = "build_alexnet"


def write_model_spec(model_dir, *, network, class_names, statistics, preprocessing="paper", extra=None):
    """Writes model_spec.json: the run's `network` (an `AlexNetSpec`), its classes and input
    statistics; `extra` adds keys (e.g. where imported weights came from). `preprocessing`
    names the evaluation crop the weights need (`pipelines.preprocessing`)."""
    from pipelines import preprocessing as conventions
    from pipelines import schema

    os.makedirs(model_dir, exist_ok=True)
    schema.write_json_atomically(os.path.join(model_dir, MODEL_SPEC_FILE), {
        **(extra or {}),
        NETWORK_KEY: network.to_json(),
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
                             num_classes=network_of(spec).num_classes,
                             class_names=tuple(spec["class_names"]), class_ids=tuple(spec.get("class_ids", ())))


def preprocessing_of(spec):
    """The evaluation crop a run's weights need: "paper" (every trained run, and specs from
    before the key existed), "caffe" or "torchvision" (imported weights)."""
    return spec.get("preprocessing", "paper")


def network_of(spec, *, source=MODEL_SPEC_FILE):
    """The `AlexNetSpec` of a model spec (a field added since it was written takes its default)."""
    return AlexNetSpec.from_json(spec[NETWORK_KEY], source=f"{source}'s {NETWORK_KEY!r}")


def load_model(model_dir, checkpoint=None):
    """(model with restored weights, model spec, checkpoint path) of a run directory."""
    spec = read_model_spec(model_dir)
    model = build_alexnet(network_of(spec, source=os.path.join(model_dir, MODEL_SPEC_FILE)))
    return model, spec, restore_weights(model, model_dir, checkpoint, require_all=False)


def restore_weights(model, model_dir, checkpoint=None, *, require_all=True):
    """Reads a run's checkpoint (default: the latest) into `model`, a network of the run's
    spec. With `require_all`, every variable of the model must be in it (a model reused for
    another run's weights keeps none of the previous run's). Returns the checkpoint path."""
    path = checkpoint or latest_checkpoint(model_dir)
    status = tf.train.Checkpoint(model=model).read(path).expect_partial()
    if require_all:
        status.assert_existing_objects_matched()
    return path
