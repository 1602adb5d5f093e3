"""Weights made elsewhere, imported into a run directory: `import_weights` turns a
bvlc_alexnet .npy into `model_spec.json` (with `imported_from`), an epoch checkpoint and a
flags.txt to fine-tune from it, which evaluation, export, prediction, neighbours and
`train --init_from` read like any run's. The library behind `python -m alexnet_tf.import_weights`."""

import os
import shutil

import tensorflow as tf

from alexnet_tf.serving import run_dir
from alexnet_tf.weights import caffe
from pipelines import schema

# The model_spec.json key that marks an imported run directory (training into it is refused).
IMPORTED_FROM = "imported_from"
# TrainConfig fields that weights fix: the fine-tune flagfile names them, and a fine-tune
# must be given the same values.
ARCHITECTURE_FIELDS = ("image_size", "groups", "lrn", "conv_filters", "fc_units")


class ImportWeightsError(ValueError):
    """The import cannot be written as asked; the message says how to fix it."""


def flag_value(value):
    """A value as absl writes it in a flagfile."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _class_names(path, num_classes):
    from pipelines import conversion

    if not path:
        return ()
    try:
        names = [text or synset for synset, text in conversion.read_class_names(path).items()]
    except OSError as error:
        raise ImportWeightsError(f"Cannot read --class_names_file={path}: {error.strerror}.") from None
    if len(names) != num_classes:
        raise ImportWeightsError(
            f"--class_names_file={path} names {len(names)} classes; the weights have {num_classes}. "
            "Expected one line per class, in the order of fc8 (e.g. synset_words.txt).")
    return tuple(names)


def _fine_tune_flagfile(model_dir, kwargs, weights_path):
    lines = [f"# Weights imported by alexnet_tf.import_weights from {weights_path}.",
             "# Fine-tune from them (the architecture flags below are the weights'):",
             "#   python -m alexnet_tf.train --flagfile=flags/finetune.flags \\",
             f"#       --flagfile={os.path.join(model_dir, 'flags.txt')} --data_dir=DIR --model_dir=NEW_DIR",
             f"--init_from={model_dir}"]
    lines += [f"--{field}={flag_value(kwargs[field])}" for field in ARCHITECTURE_FIELDS]
    return "\n".join(lines) + "\n"


def import_weights(weights_path, model_dir, *, class_names_file=None):
    """Writes a run directory holding a bvlc_alexnet .npy's weights, for RGB input.

    The folder is assembled beside `model_dir` and renamed into place, so nothing is left
    half-written; an existing non-empty `model_dir` is refused, never overwritten.

    Returns:
      The checkpoint path in the new run directory.

    Raises:
      caffe.CaffeWeightsError: the file is refused or does not hold bvlc_alexnet's layers.
      ImportWeightsError: model_dir is in use or the class names do not fit.
    """
    from pipelines.dataset import DatasetStatistics

    model_dir = os.path.abspath(model_dir)
    if os.path.exists(model_dir) and (not os.path.isdir(model_dir) or os.listdir(model_dir)):
        raise ImportWeightsError(f"--model_dir={model_dir} exists and is not empty. Choose a new folder.")
    model, kwargs = caffe.import_caffe_npy(weights_path)
    names = _class_names(class_names_file, kwargs["num_classes"])
    tmp = f"{model_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), os.path.join(tmp, run_dir.CHECKPOINTS_DIR),
                                             max_to_keep=1, checkpoint_name="ckpt")
        checkpoint = os.path.basename(manager.save(checkpoint_number=0))
        statistics = DatasetStatistics(rgb_mean=caffe.CAFFE_RGB_MEAN, num_classes=kwargs["num_classes"],
                                       class_names=names)
        run_dir.write_model_spec(tmp, build_kwargs=kwargs, class_names=names, statistics=statistics, extra={
            IMPORTED_FROM: {"weights": os.path.abspath(weights_path), "format": "bvlc_alexnet .npy (caffe-tensorflow)",
                            "class_names_file": class_names_file and os.path.abspath(class_names_file)}})
        schema.write_text_atomically(os.path.join(tmp, run_dir.FLAGS_FILE),
                                      _fine_tune_flagfile(model_dir, kwargs, os.path.abspath(weights_path)))
        if os.path.isdir(model_dir):
            os.rmdir(model_dir)  # empty (checked above)
        os.rename(tmp, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(model_dir, run_dir.CHECKPOINTS_DIR, checkpoint)
