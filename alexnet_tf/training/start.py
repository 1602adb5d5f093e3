"""What a training run starts from, decided once: `plan_start`.

Three starts, told apart before anything is built:

- "resume": `model_dir` holds checkpoints of this run. The settings that fix the run's
  network, data and order through the data (`RESUME_FIXED_FIELDS`, recorded in
  `model_spec.json` when the run started) must be the same: a rerun that changes any stops
  before writing anything, listing each. The model is rebuilt from the run's own
  `model_spec.json` when it was a fine-tune (its source is never read again), and the newest
  readable state is restored (a torn newest falls back to an older one).
- "init_from": a new run from weights made elsewhere (a run directory, or a bvlc_alexnet
  .npy). The run takes their architecture (flags that disagree are an error) and their input
  mean, copies every layer but `reinit_layers` (fc8 by default, rebuilt for the data's
  classes), and freezes `freeze_layers`: no gradient, no weight decay, no optimizer slots.
- "new": fresh weights from the config's architecture and the data's mean.

The loop calls `plan_start` once: it checks the run directory and the layer names before
reading any data, resolves the data, and returns a `RunStart`. The loop builds the model from
`RunStart.network`, freezes `RunStart.freeze_layers`, feeds `RunStart.data` with
`RunStart.statistics`, and hands the checkpointed state to `RunStart.initialize`.
"""

import dataclasses
import logging
import os

import keras

from alexnet_tf.model.alexnet import WEIGHTED_LAYERS
from alexnet_tf.model.spec import AlexNetSpec
from alexnet_tf import run_dir
from alexnet_tf.training.config import TrainingError
from alexnet_tf.training.data import resolve_data
from alexnet_tf.weights import WeightsFileError, importing
from alexnet_tf.weights.importing import ARCHITECTURE_FIELDS, IMPORTED_FROM, flag_value

logger = logging.getLogger(__name__)

KINDS = ("new", "resume", "init_from")

# What a resume must keep, derived from what the checkpoint and the input stream depend on:
# - the checkpoint's structure: the network (image_size ... num_classes), the layers that
#   train (freeze_layers: a frozen layer has no optimizer slots) and the precision
#   (mixed_precision: float16 adds the loss scale's state, and the weights' numerics change);
# - the data stream, a function of the data, the seed and the position: the data source,
#   batch_size, seed, shuffle_buffer, steps_per_epoch (each epoch uses steps_per_epoch x
#   batch of its shuffled records, and the epoch of a step is step // steps_per_epoch) and
#   tf_data_service (a service stream has no position to resume);
# - where the weights came from (init_from).
# Everything else may change on a resume (epochs; the learning-rate recipe, applied from the
# resumed step on by training.schedule; logging, backups, evaluation steps, strategy and
# device flags) and is recorded in flags.txt.
RESUME_FIXED_FIELDS = ("image_size", "groups", "lrn", "conv_filters", "fc_units", "pool_size", "activation",
                       "removed_layers", "num_classes", "batch_size",
                       "data_dir", "train_files", "eval_files", "tfds_name", "tfds_data_dir", "synthetic",
                       "init_from", "seed", "shuffle_buffer", "steps_per_epoch", "freeze_layers", "mixed_precision",
                       "tf_data_service")
_PATH_FIELDS = ("data_dir", "train_files", "eval_files", "tfds_data_dir", "init_from")
# model_spec.json's record of them.
RUN_SETTINGS_KEY = "run_settings"
# The network as model_spec.json records it, compared on a resume (older runs have no
# RUN_SETTINGS_KEY; their network is still checked).
_NETWORK_KEYS = ("num_classes", "image_size", "groups", "lrn", "conv_filters", "fc_units", "pool_size", "activation",
                 "removed_layers")


@dataclasses.dataclass(frozen=True)
class RunStart:
    """Where a run starts.

    Attributes:
      kind: "new", "resume" or "init_from" (see the module docstring).
      data: the run's `TrainingData`.
      network: the `AlexNetSpec` of the run's model.
      statistics: the data's `DatasetStatistics`, with the input mean the weights expect.
      freeze_layers: layers that do not train.
      reinit_layers: with "init_from", the layers that get fresh weights.
      source: `init_from` of a fine-tune (new or resumed), else None.
      source_model: with "init_from", the source's model holding its weights.
    """

    kind: str
    data: object
    network: AlexNetSpec
    statistics: object
    freeze_layers: tuple = ()
    reinit_layers: tuple = ()
    source: str | None = None
    source_model: keras.Model | None = None

    def initialize(self, state):
        """Puts the start's weights into `state`'s freshly built model: restores the newest
        state of model_dir ("resume"), or copies the source's layers ("init_from").

        Returns:
          The path of the restored checkpoint, or None.
        """
        if self.kind == "resume":
            return state.restore_newest()
        if self.kind == "init_from":
            _copy_layers(self.source_model, state.checkpoint.model, source=self.source,
                         reinit_layers=self.reinit_layers)
        return None


def plan_start(config):
    """The `RunStart` of `config`.

    Raises:
      TrainingError: model_dir holds imported weights; --freeze_layers / --reinit_layers
        name unknown layers; the data cannot be read (`data.resolve_data`); the config's architecture does not fit the weights of
        --init_from, or fc8 is kept but the classes differ.
    """
    check_trainable(config.model_dir)
    _check_layer_names(config)
    data = resolve_data(config)
    resuming = run_dir.has_checkpoint(config.model_dir)
    kind = "resume" if resuming else ("init_from" if config.init_from else "new")
    spec = _spec_if_any(config.model_dir) if resuming else None
    if spec:
        _check_resume_settings(config, spec.get(RUN_SETTINGS_KEY))
    if not config.init_from:
        network = network_of_config(config, num_classes=data.num_classes)
        if spec:
            _check_resume_network(config, run_dir.network_of(spec), network)
        return RunStart(kind, data, network, data.statistics, freeze_layers=tuple(config.freeze_layers))
    if resuming:
        # A fine-tune resumes from its own checkpoint: its source is not read again.
        spec = run_dir.read_model_spec(config.model_dir)
        source_network, rgb_mean, source_model = run_dir.network_of(spec), tuple(spec["rgb_mean"]), None
    else:
        source_network, rgb_mean, source_model = _load_source(config.init_from)
    _check_architecture(config, source_network)
    if "fc8" not in config.reinit_layers and source_network.num_classes != data.num_classes:
        raise TrainingError(
            f"fc8 of {config.init_from} has {source_network.num_classes} classes; the data has "
            f"{data.num_classes}. Keep fc8 in --reinit_layers to give it the data's classes.")
    # The source's architecture, the data's classes, the config's dropout, decay and init.
    network = source_network.replace(num_classes=data.num_classes, dropout=config.dropout,
                                     weight_decay=config.weight_decay, init=config.init)
    if resuming:
        _check_resume_network(config, source_network, network)
    statistics = dataclasses.replace(data.statistics, rgb_mean=tuple(float(v) for v in rgb_mean))
    return RunStart(kind, data, network, statistics, freeze_layers=tuple(config.freeze_layers),
                    reinit_layers=tuple(config.reinit_layers), source=config.init_from, source_model=source_model)


def run_settings(config):
    """The config's `RESUME_FIXED_FIELDS` as model_spec.json records them (paths absolute)."""
    settings = {}
    for field in RESUME_FIXED_FIELDS:
        value = getattr(config, field)
        if field in _PATH_FIELDS and value and "://" not in value:
            value = os.path.abspath(value)
        settings[field] = list(value) if isinstance(value, tuple) else value
    return settings


def _spec_if_any(model_dir):
    try:
        return run_dir.read_model_spec(model_dir)
    except FileNotFoundError:
        return None


def _refuse_resume(config, differences):
    lines = "\n".join(f"  --{name}: the run's {flag_value(old)}, now {flag_value(new)}" for name, old, new in differences)
    flagfile = os.path.join(config.model_dir, run_dir.FLAGS_FILE)
    raise TrainingError(
        f"{config.model_dir} holds a run that was started with other settings, and a resume must keep "
        f"them (they fix the run's network, its data or its order through the data):\n{lines}\n"
        f"Nothing was written. Resume with the run's own values (--flagfile={flagfile}, then only flags "
        "that may change: --epochs, --learning_rate, --warmup_epochs, the --plateau_* flags, "
        "--max_lr_reductions, --log_every_steps, --backup_every_steps, --eval_steps, --strategy, ...), or "
        "train into a new --model_dir.")


def _check_resume_settings(config, recorded):
    if not recorded:
        return
    current = run_settings(config)
    differences = [(field, recorded[field], current[field]) for field in RESUME_FIXED_FIELDS
                   if field in recorded and recorded[field] != current[field]]
    if differences:
        _refuse_resume(config, differences)


def network_of_config(config, *, num_classes):
    """The `AlexNetSpec` a new run of `config` trains: its flags' fields, the paper's others."""
    return AlexNetSpec(num_classes=num_classes, image_size=config.image_size, groups=config.groups,
                       dropout=config.dropout, lrn=config.lrn, weight_decay=config.weight_decay, init=config.init,
                       conv_filters=config.conv_filters, fc_units=config.fc_units, pool_size=config.pool_size,
                       activation=config.activation, removed_layers=config.removed_layers)


def _check_resume_network(config, recorded, network):
    differences = recorded.differences(network, _NETWORK_KEYS)
    if differences:
        _refuse_resume(config, differences)


def freeze_layers(model, names):
    """Makes the named layers non-trainable: out of `trainable_variables`, so they get no
    gradient, no optimizer slots, and no weight-decay term (Keras decays trainable weights)."""
    for name in names:
        model.get_layer(name).trainable = False


def _load_source(path):
    """(`AlexNetSpec`, RGB mean, model with the weights) of a run directory (its latest
    checkpoint), a bvlc_alexnet .npy or a torchvision .pth."""
    if os.path.isdir(path):
        try:
            model, spec, checkpoint = run_dir.load_model(path)
        except FileNotFoundError as error:
            raise TrainingError(f"--init_from={path}: {error}") from error
        logger.info("Initialising from %s", checkpoint)
        return run_dir.network_of(spec), tuple(spec["rgb_mean"]), model
    if os.path.isfile(path):
        try:
            weights = importing.read_weights(path)
        except WeightsFileError as error:
            raise TrainingError(f"--init_from: {error}") from error
        logger.info("Initialising from the %s weights in %s", weights.preprocessing, path)
        return weights.network, weights.rgb_mean, weights.model
    raise TrainingError(
        f"--init_from={path} is neither a run directory nor a weights file. Pass the --model_dir of a "
        "run (or of alexnet_tf.import_weights), a bvlc_alexnet .npy or a torchvision .pth.")


def _check_architecture(config, source_network):
    for field in ARCHITECTURE_FIELDS:
        wanted, found = getattr(config, field), getattr(source_network, field)
        if isinstance(found, tuple):
            wanted = tuple(wanted)
        if wanted != found:
            raise TrainingError(
                f"--{field}={flag_value(wanted)} does not fit the weights in {config.init_from}, which "
                f"were made with --{field}={flag_value(found)}. Pass --{field}={flag_value(found)}: a "
                "fine-tune keeps the architecture of its weights.")


def _check_layer_names(config):
    """TrainingError naming any --freeze_layers / --reinit_layers entry that is not a layer
    with weights, or a layer both re-initialised and frozen."""
    for flag, names in (("freeze_layers", config.freeze_layers), ("reinit_layers", config.reinit_layers)):
        unknown = [name for name in names if name not in WEIGHTED_LAYERS]
        if unknown:
            raise TrainingError(
                f"--{flag} names {', '.join(unknown)}, which is not a layer with weights. Expected "
                f"names among {', '.join(WEIGHTED_LAYERS)}.")
    removed = [name for name in (*config.freeze_layers, *(config.reinit_layers if config.init_from else ()))
               if name in config.removed_layers]
    if removed:
        raise TrainingError(f"{', '.join(removed)} is in --removed_layers: it cannot be frozen or re-initialised.")
    both = sorted(set(config.freeze_layers) & set(config.reinit_layers)) if config.init_from else []
    if both:
        raise TrainingError(
            f"{', '.join(both)} would be re-initialised and frozen (random weights that never train). "
            "Take it out of --freeze_layers or --reinit_layers.")


def check_trainable(model_dir):
    """TrainingError if model_dir holds imported weights (a run must start elsewhere)."""
    path = os.path.join(model_dir, run_dir.MODEL_SPEC_FILE)
    if os.path.exists(path) and IMPORTED_FROM in run_dir.read_model_spec(model_dir):
        raise TrainingError(
            f"{model_dir} holds weights imported by alexnet_tf.import_weights, not a training run. "
            f"Fine-tune from it into a new folder: --init_from={model_dir} --model_dir=NEW_DIR.")


def _copy_layers(source_model, model, *, source, reinit_layers):
    """Copies the source's weights into `model`, every layer with weights but `reinit_layers`."""
    present = {layer.name for layer in model.layers}
    copied = [name for name in WEIGHTED_LAYERS if name not in reinit_layers and name in present]
    pairs = []
    for name in copied:
        if name not in {layer.name for layer in source_model.layers}:
            raise TrainingError(f"{source} has no layer {name} (its network leaves it out). Add {name} to "
                                "--reinit_layers, or --removed_layers.")
        source_layer, target = source_model.get_layer(name), model.get_layer(name)
        for part in ("kernel", "bias"):
            value, variable = getattr(source_layer, part), getattr(target, part)
            if tuple(value.shape) != tuple(variable.shape):
                raise TrainingError(
                    f"Layer {name}: the {part} in {source} has shape {tuple(value.shape)}; the "
                    f"model's has {tuple(variable.shape)}. Add {name} to --reinit_layers.")
            pairs.append((variable, value))
    for variable, value in pairs:
        variable.assign(value)
    logger.info("Copied %s from %s; fresh weights in %s", ", ".join(copied), source,
                ", ".join(reinit_layers) or "no layer")
