"""Weights made elsewhere, imported into a run directory: `import_weights` turns a
bvlc_alexnet .npy or a torchvision .pth (told apart by content) into `model_spec.json` (with
`imported_from` and the `preprocessing` the weights need), an epoch checkpoint and a
flags.txt to fine-tune from it, which evaluation, export, prediction, neighbours and
`train --init_from` read like any run's. The library behind `python -m alexnet_tf.import_weights`."""

import dataclasses
import os
import shutil

import tensorflow as tf

from alexnet_tf import run_dir
from alexnet_tf.model.spec import AlexNetSpec
from alexnet_tf.weights import caffe, torchvision
from pipelines import schema

# The model_spec.json key that marks an imported run directory (training into it is refused).
IMPORTED_FROM = "imported_from"
# TrainConfig fields that weights fix: the fine-tune flagfile names them, and a fine-tune
# must be given the same values.
ARCHITECTURE_FIELDS = ("image_size", "groups", "lrn", "conv_filters", "fc_units")


class ImportWeightsError(ValueError):
    """The import cannot be written as asked; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class ImportedWeights:
    """A weights file in the project's network for its RGB input, and what a run records."""

    model: object
    network: AlexNetSpec
    rgb_mean: tuple  # subtracted from RGB 0-255 input (std, if any, is folded into conv1)
    preprocessing: str  # the evaluation crop (`pipelines.preprocessing`)
    format: str


def read_weights(path):
    """The weights of a bvlc_alexnet .npy or a torchvision .pth, told apart by content.

    Raises:
      WeightsFileError: the file is refused or is neither layout (the reader says why).
    """
    if torchvision.is_pth(path):
        model, network = torchvision.import_torchvision_pth(path)
        return ImportedWeights(model, network, torchvision.TORCHVISION_RGB_MEAN, "torchvision",
                               "torchvision AlexNet state_dict .pth")
    model, network = caffe.import_caffe_npy(path)
    return ImportedWeights(model, network, caffe.CAFFE_RGB_MEAN, "caffe", "bvlc_alexnet .npy (caffe-tensorflow)")


def flag_value(value):
    """A value as absl writes it in a flagfile."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _classes(path, num_classes):
    """(class ids, names) in fc8 order: from --class_names_file, else ILSVRC-2012's for 1000
    classes (both released weight sets use its sorted-wnid order), else none."""
    from pipelines import conversion, imagenet

    if not path:
        if num_classes == imagenet.NUM_CLASSES:
            return imagenet.wnids(), imagenet.class_names()
        return (), ()
    try:
        mapping = conversion.read_class_names(path)
    except OSError as error:
        raise ImportWeightsError(f"Cannot read --class_names_file={path}: {error.strerror}.") from None
    if len(mapping) != num_classes:
        raise ImportWeightsError(
            f"--class_names_file={path} names {len(mapping)} classes; the weights have {num_classes}. "
            "Expected one line per class, in the order of fc8 (e.g. synset_words.txt).")
    return tuple(mapping), tuple(text or synset for synset, text in mapping.items())


def _fine_tune_flagfile(model_dir, network, weights_path):
    lines = [f"# Weights imported by alexnet_tf.import_weights from {weights_path}.",
             "# Fine-tune from them (the architecture flags below are the weights'):",
             "#   python -m alexnet_tf.train --flagfile=flags/finetune.flags \\",
             f"#       --flagfile={os.path.join(model_dir, 'flags.txt')} --data_dir=DIR --model_dir=NEW_DIR",
             f"--init_from={model_dir}"]
    lines += [f"--{field}={flag_value(getattr(network, field))}" for field in ARCHITECTURE_FIELDS]
    return "\n".join(lines) + "\n"


def import_weights(weights_path, model_dir, *, class_names_file=None):
    """Writes a run directory holding a bvlc_alexnet .npy's or torchvision .pth's weights,
    for RGB input.

    The folder is assembled beside `model_dir` and renamed into place, so nothing is left
    half-written; an existing non-empty `model_dir` is refused, never overwritten.

    Returns:
      The checkpoint path in the new run directory.

    Raises:
      WeightsFileError: the file is refused or holds neither layout.
      ImportWeightsError: model_dir is in use or the class names do not fit.
    """
    from pipelines.dataset import DatasetStatistics

    model_dir = os.path.abspath(model_dir)
    if os.path.exists(model_dir) and (not os.path.isdir(model_dir) or os.listdir(model_dir)):
        raise ImportWeightsError(f"--model_dir={model_dir} exists and is not empty. Choose a new folder.")
    weights = read_weights(weights_path)
    model, network = weights.model, weights.network
    class_ids, names = _classes(class_names_file, network.num_classes)
    tmp = f"{model_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), os.path.join(tmp, run_dir.CHECKPOINTS_DIR),
                                             max_to_keep=1, checkpoint_name="ckpt")
        checkpoint = os.path.basename(manager.save(checkpoint_number=0))
        statistics = DatasetStatistics(rgb_mean=weights.rgb_mean, num_classes=network.num_classes,
                                       class_names=names, class_ids=class_ids)
        run_dir.write_model_spec(tmp, network=network, class_names=names, statistics=statistics,
                                 preprocessing=weights.preprocessing, extra={
            IMPORTED_FROM: {"weights": os.path.abspath(weights_path), "format": weights.format,
                            "class_names_file": class_names_file and os.path.abspath(class_names_file)}})
        schema.write_text_atomically(os.path.join(tmp, run_dir.FLAGS_FILE),
                                      _fine_tune_flagfile(model_dir, network, os.path.abspath(weights_path)))
        if os.path.isdir(model_dir):
            os.rmdir(model_dir)  # empty (checked above)
        os.rename(tmp, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(model_dir, run_dir.CHECKPOINTS_DIR, checkpoint)
