"""Weights trained elsewhere: importing them into a run directory, and starting a run from them.

- `import_weights` turns a bvlc_alexnet .npy into a run directory (model_spec.json, an epoch
  checkpoint, a flags.txt to fine-tune from it) that evaluation, export and prediction read
  like any run's.
- A training run with `init_from` (a run directory or a .npy) takes its architecture and
  input mean from those weights, copies every layer but `reinit_layers` (fc8 by default,
  rebuilt for the data's classes), and freezes `freeze_layers`: no gradient, no weight
  decay, no optimizer slots. A resumed fine-tune restores its own checkpoint and never
  reads its source again.
"""

import dataclasses
import logging
import os
import shutil

import tensorflow as tf
import keras

from alexnet_tf import caffe, runs
from alexnet_tf.model import WEIGHTED_LAYERS
from alexnet_tf.train_config import TrainingError

logger = logging.getLogger(__name__)

# TrainConfig fields that the weights fix: a fine-tune must be given the same values.
ARCHITECTURE_FIELDS = ("image_size", "groups", "lrn", "conv_filters", "fc_units")
IMPORTED_FROM = "imported_from"


class ImportWeightsError(ValueError):
    """The import cannot be written as asked; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Start:
    """Where a fine-tune starts: its source's architecture, input mean and (for a new run)
    the source model with its weights."""

    source: str
    build_kwargs: dict
    rgb_mean: tuple
    model: keras.Model | None = None


def load_pretrained(path):
    """The `Start` of a run directory (its latest checkpoint) or a bvlc_alexnet .npy."""
    if os.path.isdir(path):
        try:
            model, spec, checkpoint = runs.load_model(path)
        except FileNotFoundError as error:
            raise TrainingError(f"--init_from={path}: {error}") from error
        logger.info("Initialising from %s", checkpoint)
        return Start(path, runs.build_kwargs_of(spec), tuple(spec["rgb_mean"]), model)
    if os.path.isfile(path):
        try:
            model, kwargs = caffe.import_caffe_npy(path)
        except caffe.CaffeWeightsError as error:
            raise TrainingError(f"--init_from: {error}") from error
        logger.info("Initialising from the bvlc_alexnet weights in %s", path)
        return Start(path, kwargs, caffe.CAFFE_RGB_MEAN, model)
    raise TrainingError(
        f"--init_from={path} is neither a run directory nor a weights file. Pass the --model_dir of a "
        "run (or of alexnet_tf.import_weights), or a bvlc_alexnet .npy.")


def plan_start(config):
    """The `Start` of `config.init_from` (when model_dir already holds this fine-tune's
    checkpoints, its own model_spec.json: the source is not read again). TrainingError if
    the config's architecture does not fit the weights."""
    if runs.has_checkpoint(config.model_dir):
        spec = runs.read_model_spec(config.model_dir)
        start = Start(config.init_from, runs.build_kwargs_of(spec), tuple(spec["rgb_mean"]))
    else:
        start = load_pretrained(config.init_from)
    for field in ARCHITECTURE_FIELDS:
        wanted, found = getattr(config, field), start.build_kwargs[field]
        if isinstance(found, tuple):
            wanted = tuple(wanted)
        if wanted != found:
            raise TrainingError(
                f"--{field}={_flag_value(wanted)} does not fit the weights in {start.source}, which "
                f"were made with --{field}={_flag_value(found)}. Pass --{field}={_flag_value(found)}: a "
                "fine-tune keeps the architecture of its weights.")
    return start


def _flag_value(value):
    """A value as absl writes it in a flagfile."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def build_kwargs_for(start, *, config, num_classes):
    """`build_alexnet` arguments of the fine-tuned model: the source's architecture, the
    data's classes, the config's dropout, decay and init. TrainingError if fc8 is kept but
    the classes differ."""
    source = start.build_kwargs
    if "fc8" not in config.reinit_layers and source["num_classes"] != num_classes:
        raise TrainingError(
            f"fc8 of {start.source} has {source['num_classes']} classes; the data has {num_classes}. "
            "Keep fc8 in --reinit_layers to give it the data's classes.")
    return dict(source, num_classes=num_classes, dropout=config.dropout, weight_decay=config.weight_decay,
                init=config.init)


def check_layer_names(config):
    """TrainingError naming any --freeze_layers / --reinit_layers entry that is not a layer
    with weights, or a layer both re-initialised and frozen."""
    for flag, names in (("freeze_layers", config.freeze_layers), ("reinit_layers", config.reinit_layers)):
        unknown = [name for name in names if name not in WEIGHTED_LAYERS]
        if unknown:
            raise TrainingError(
                f"--{flag} names {', '.join(unknown)}, which is not a layer with weights. Expected "
                f"names among {', '.join(WEIGHTED_LAYERS)}.")
    both = sorted(set(config.freeze_layers) & set(config.reinit_layers)) if config.init_from else []
    if both:
        raise TrainingError(
            f"{', '.join(both)} would be re-initialised and frozen (random weights that never train). "
            "Take it out of --freeze_layers or --reinit_layers.")


def freeze_layers(model, names):
    """Makes the named layers non-trainable: out of `trainable_variables`, so they get no
    gradient, no optimizer slots, and no weight-decay term (Keras decays trainable weights)."""
    for name in names:
        model.get_layer(name).trainable = False


def initialize_from(start, model, *, reinit_layers):
    """Copies the source's weights into `model`, every layer with weights but `reinit_layers`."""
    copied = [name for name in WEIGHTED_LAYERS if name not in reinit_layers]
    pairs = []
    for name in copied:
        source, target = start.model.get_layer(name), model.get_layer(name)
        for part in ("kernel", "bias"):
            value, variable = getattr(source, part), getattr(target, part)
            if tuple(value.shape) != tuple(variable.shape):
                raise TrainingError(
                    f"Layer {name}: the {part} in {start.source} has shape {tuple(value.shape)}; the "
                    f"model's has {tuple(variable.shape)}. Add {name} to --reinit_layers.")
            pairs.append((variable, value))
    for variable, value in pairs:
        variable.assign(value)
    logger.info("Copied %s from %s; fresh weights in %s", ", ".join(copied), start.source,
                ", ".join(reinit_layers) or "no layer")


def check_not_imported(model_dir):
    """TrainingError if model_dir holds imported weights (a run must start elsewhere)."""
    path = os.path.join(model_dir, runs.MODEL_SPEC_FILE)
    if os.path.exists(path) and IMPORTED_FROM in runs.read_model_spec(model_dir):
        raise TrainingError(
            f"{model_dir} holds weights imported by alexnet_tf.import_weights, not a training run. "
            f"Fine-tune from it into a new folder: --init_from={model_dir} --model_dir=NEW_DIR.")


# ---------------------------------------------------------------------------------------
# Import


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
    lines += [f"--{field}={_flag_value(kwargs[field])}" for field in ARCHITECTURE_FIELDS]
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
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), os.path.join(tmp, runs.CHECKPOINTS_DIR),
                                             max_to_keep=1, checkpoint_name="ckpt")
        checkpoint = os.path.basename(manager.save(checkpoint_number=0))
        statistics = DatasetStatistics(rgb_mean=caffe.CAFFE_RGB_MEAN, num_classes=kwargs["num_classes"],
                                       class_names=names)
        runs.write_model_spec(tmp, build_kwargs=kwargs, class_names=names, statistics=statistics, extra={
            IMPORTED_FROM: {"weights": os.path.abspath(weights_path), "format": "bvlc_alexnet .npy (caffe-tensorflow)",
                            "class_names_file": class_names_file and os.path.abspath(class_names_file)}})
        with open(os.path.join(tmp, "flags.txt"), "w", encoding="utf-8") as f:
            f.write(_fine_tune_flagfile(model_dir, kwargs, os.path.abspath(weights_path)))
        if os.path.isdir(model_dir):
            os.rmdir(model_dir)  # empty (checked above)
        os.rename(tmp, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(model_dir, runs.CHECKPOINTS_DIR, checkpoint)
