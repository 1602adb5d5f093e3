r"""Trains AlexNet: `python -m alexnet_tf.train --flagfile=flags/alexnet_imagenet.flags`.

    # The embedded default: generates, converts, trains and evaluates a small dataset.
    python -m alexnet_tf.train --flagfile=flags/quickstart.flags
    # The paper's recipe on converted ImageNet shards:
    python -m alexnet_tf.train --flagfile=flags/alexnet_imagenet.flags \
        --data_dir=data/imagenet --model_dir=runs/alexnet

Later flags override the flagfile's. Rerunning the same command resumes the run in
--model_dir. Flags are defined here only; the library (`alexnet_tf.training`) takes a
`TrainConfig`.
"""

import logging
import os
import sys

from absl import app
from absl import flags

from alexnet_tf.cli import configs

FLAGS = flags.FLAGS
logger = logging.getLogger(__name__)

# Data.
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards and dataset_info.json from pipelines.convert.")
_TRAIN_FILES = flags.DEFINE_string("train_files", None, "Glob of training shards (instead of --data_dir).")
_EVAL_FILES = flags.DEFINE_string("eval_files", None, "Glob of validation shards.")
_TFDS_NAME = flags.DEFINE_string("tfds_name", None, "A prepared TFDS dataset, e.g. imagenet2012.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir holding --tfds_name.")
_SYNTHETIC = flags.DEFINE_bool("synthetic", False, "In-memory random data, for throughput runs.")
_GENERATE_DATA = flags.DEFINE_string(
    "generate_data", None,
    "Without any data flag: generate a small procedural dataset into this folder once "
    "(reused on later runs), convert it, and train on it.")
_GENERATE_CLASSES = flags.DEFINE_integer("generate_classes", 10, "Classes of --generate_data.", lower_bound=2)
_GENERATE_TRAIN_IMAGES = flags.DEFINE_integer(
    "generate_train_images", 60, "Training images per class of --generate_data.", lower_bound=1)
_GENERATE_EVAL_IMAGES = flags.DEFINE_integer(
    "generate_eval_images", 20, "Validation images per class of --generate_data.", lower_bound=1)
_TF_DATA_SERVICE = flags.DEFINE_string(
    "tf_data_service", None,
    "grpc://HOST:PORT of a tf.data service dispatcher (python -m pipelines.data_service): the "
    "training input pipeline runs there. Resumes then restart the input stream.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run directory: checkpoints, backup, logs, flags.txt.")

# Model.
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 0, "Classes; 0: from dataset_info.json.", lower_bound=0)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side (the paper: 224; >= 64).", lower_bound=64)
_GROUPS = flags.DEFINE_integer("groups", 2, "2: the paper's two-GPU connectivity; 1: none.", lower_bound=1)
_LRN = flags.DEFINE_bool("lrn", True, "Local response normalisation after conv1 and conv2.")
_DROPOUT = flags.DEFINE_float("dropout", 0.5, "Dropout after fc6 and fc7.", lower_bound=0.0, upper_bound=0.99)
_INIT = flags.DEFINE_enum("init", "paper", ["paper", "he"], "paper: N(0, 0.01) and unit biases; he: He normal.")
_CONV_FILTERS = flags.DEFINE_list("conv_filters", ["96", "256", "384", "384", "256"], "Kernels of conv1..conv5.")
_FC_UNITS = flags.DEFINE_integer("fc_units", 4096, "Width of fc6 and fc7.", lower_bound=1)
_POOL_SIZE = flags.DEFINE_integer("pool_size", 3, "Max-pooling window, stride 2: 3 overlaps (the paper, Section 3.4); "
                                  "2 does not.", lower_bound=2, upper_bound=3)
_ACTIVATION = flags.DEFINE_enum("activation", "relu", ["relu", "tanh"], "Nonlinearity of the hidden layers "
                                "(the paper: ReLU; tanh for Section 3.1's comparison).")
_REMOVED_LAYERS = flags.DEFINE_list("removed_layers", [], "Convolutional layers left out, among conv3, conv4, conv5 "
                                    "(Section 7's ablation): the next layer takes the previous one's output.")

# Augmentation (Section 4.1); each can be switched off for the ablations.
_RANDOM_CROP = flags.DEFINE_bool("random_crop", True, "Random 224/256 crops in training (false: the centre crop).")
_RANDOM_FLIP = flags.DEFINE_bool("random_flip", True, "Horizontal reflections in training.")
_LIGHTING_STDDEV = flags.DEFINE_float("lighting_stddev", 0.1, "PCA lighting noise: alpha ~ N(0, this) (the paper: "
                                      "0.1; 0: none).", lower_bound=0.0)

# The paper's recipe.
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Global batch (split across replicas).", lower_bound=1, upper_bound=65536)
_EPOCHS = flags.DEFINE_integer("epochs", 90, "Maximum epochs.", lower_bound=1)
_STEPS_PER_EPOCH = flags.DEFINE_integer("steps_per_epoch", 0, "0: training examples // batch.", lower_bound=0)
_EVAL_STEPS = flags.DEFINE_integer("eval_steps", 0, "0: the whole validation split.", lower_bound=0)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.01, "Starting learning rate.", lower_bound=0.0)
_WARMUP_EPOCHS = flags.DEFINE_float(
    "warmup_epochs", 0.0, "Epochs over which the learning rate rises linearly from 0 to --learning_rate "
    "(large batches; Goyal et al. 2017). 0: none, as in the paper.", lower_bound=0.0)
_MAX_BAD_FRACTION = flags.DEFINE_float(
    "max_bad_fraction", 0.001, "Undecodable images allowed in shards not written by pipelines.convert "
    "(skipped and logged with their shard), as a fraction of the records; more stops the run.",
    lower_bound=0.0, upper_bound=1.0)
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0.0, upper_bound=1.0)
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 5e-4, "The paper's weight decay (L2 through momentum).", lower_bound=0.0)
_PLATEAU_FACTOR = flags.DEFINE_float("plateau_factor", 0.1, "Learning-rate multiplier on a plateau, 0 < f < 1.")
_PLATEAU_PATIENCE = flags.DEFINE_integer("plateau_patience", 1, "Epochs without improvement before a reduction.", lower_bound=1)
_PLATEAU_MIN_DELTA = flags.DEFINE_float("plateau_min_delta", 0.0, "Smallest top-1 error improvement that counts.", lower_bound=0.0)
_PLATEAU_COOLDOWN = flags.DEFINE_integer("plateau_cooldown", 0, "Keras' cooldown: the N - 1 epochs after a reduction do not count towards the patience.", lower_bound=0)
_MAX_LR_REDUCTIONS = flags.DEFINE_integer("max_lr_reductions", 3, "Reductions before training stops (the paper: 3).", lower_bound=0)

# Fine-tuning (alexnet_tf.training.start).
_INIT_FROM = flags.DEFINE_string(
    "init_from", None,
    "Start a new run from these weights: a run directory (of alexnet_tf.train or "
    "alexnet_tf.import_weights), a bvlc_alexnet .npy or a torchvision .pth. The architecture flags must match the "
    "weights'; the input mean is theirs. A rerun resumes from --model_dir's own checkpoints.")
_REINIT_LAYERS = flags.DEFINE_list(
    "reinit_layers", ["fc8"], "With --init_from: layers given fresh weights instead of copied ones "
    "(fc8 is rebuilt for the data's classes).")
_FREEZE_LAYERS = flags.DEFINE_list(
    "freeze_layers", [], "Layers that do not train: no gradient, no weight decay, no optimizer "
    "slots (e.g. conv1,conv2,conv3,conv4,conv5).")

# Machinery.
_STRATEGY = flags.DEFINE_enum("strategy", "auto", ["auto", "default", "one_device", "mirrored", "multi_worker", "tpu"],
                              "auto: MultiWorker with a TF_CONFIG cluster, Mirrored over GPUs, else default.")
_NUM_VIRTUAL_CPUS = flags.DEFINE_integer("num_virtual_cpus", 0, "Split the CPU into this many devices (>1: mirrored on CPU).", lower_bound=0)
_MIXED_PRECISION = flags.DEFINE_enum("mixed_precision", "none", ["none", "float16", "bfloat16"], "Keras mixed-precision policy.")
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "Compile the replica step with XLA (off: 1.3x slower on CPU).")
_STEPS_PER_EXECUTION = flags.DEFINE_integer("steps_per_execution", 1, "Steps per tf.function call.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of initial weights, data order and augmentation.", lower_bound=0)
_SHUFFLE_BUFFER = flags.DEFINE_integer("shuffle_buffer", 10_000, "Examples in the shuffle buffer.", lower_bound=1)
_KEEP_CHECKPOINTS = flags.DEFINE_integer("keep_checkpoints", 3, "Epoch checkpoints kept.", lower_bound=1)
_BACKUP_EVERY_STEPS = flags.DEFINE_integer("backup_every_steps", 100, "Steps between restart backups.", lower_bound=1)
_LOG_EVERY_STEPS = flags.DEFINE_integer("log_every_steps", 50, "Steps between progress lines.", lower_bound=1)
_EXPORT = flags.DEFINE_bool("export", True, "Export a SavedModel to model_dir/export/<version> at the end.")



# Run directories are local (or mounted): checked when the flags are parsed.
configs.require_local_paths("model_dir")

@flags.validator("conv_filters", "Expected 5 positive integers (conv1..conv5), e.g. 96,256,384,384,256.")
def _check_conv_filters(value):
    return len(value) == 5 and all(v.isdigit() and int(v) > 0 for v in value)


@flags.validator("plateau_factor", "Expected 0 < --plateau_factor < 1 (the paper divides by 10: 0.1).")
def _check_plateau_factor(value):
    return 0.0 < value < 1.0


@flags.multi_flags_validator(
    ["eval_files", "train_files"], "--eval_files needs --train_files (or use --data_dir).")
def _check_eval_files(values):
    return not values["eval_files"] or values["train_files"]


def _validate():
    """Checks that need several flags; raises app.UsageError naming the flag and value."""
    if not _MODEL_DIR.value:
        raise app.UsageError("--model_dir is required (the run directory).")
    sources = [name for name, value in (("--data_dir", _DATA_DIR.value), ("--train_files", _TRAIN_FILES.value),
                                        ("--tfds_name", _TFDS_NAME.value), ("--synthetic", _SYNTHETIC.value)) if value]
    if len(sources) > 1:
        raise app.UsageError(f"Pass one data source; received {' and '.join(sources)}.")
    if not sources and not _GENERATE_DATA.value:
        raise app.UsageError(
            "No data: pass --data_dir (shards from pipelines.convert), --train_files, "
            "--tfds_name, --synthetic, or --generate_data=DIR for a generated dataset.")
    if _DATA_DIR.value and not os.path.isdir(_DATA_DIR.value):
        raise app.UsageError(f"--data_dir={_DATA_DIR.value} is not a folder.")
    if _TFDS_NAME.value and not _TFDS_DATA_DIR.value:
        raise app.UsageError("--tfds_name needs --tfds_data_dir (no downloads happen here).")
    if _TF_DATA_SERVICE.value and not _TF_DATA_SERVICE.value.startswith("grpc://"):
        raise app.UsageError(f"Expected --tf_data_service=grpc://HOST:PORT. Received: {_TF_DATA_SERVICE.value!r}")
    if _SYNTHETIC.value and not _NUM_CLASSES.value:
        raise app.UsageError("--synthetic needs --num_classes (e.g. 1000).")
    from alexnet_tf.model.spec import AlexNetSpec

    try:  # the network the flags describe, checked as the library will (classes come later)
        AlexNetSpec(image_size=_IMAGE_SIZE.value, groups=_GROUPS.value, dropout=_DROPOUT.value, init=_INIT.value,
                    conv_filters=[int(v) for v in _CONV_FILTERS.value], fc_units=_FC_UNITS.value,
                    pool_size=_POOL_SIZE.value, activation=_ACTIVATION.value, removed_layers=_REMOVED_LAYERS.value)
    except ValueError as error:
        raise app.UsageError(f"The architecture flags do not make a network: {error}") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _validate()
    from alexnet_tf.cli import console

    # TensorFlow's own INFO lines (e.g. one per checkpoint shard) drown the progress lines.
    console.quiet_tensorflow_info()
    data_dir = _DATA_DIR.value
    if not any([data_dir, _TRAIN_FILES.value, _TFDS_NAME.value, _SYNTHETIC.value]):
        from pipelines import synthetic

        data_dir = synthetic.write_train_and_validation(
            _GENERATE_DATA.value, num_classes=_GENERATE_CLASSES.value,
            train_images_per_class=_GENERATE_TRAIN_IMAGES.value,
            eval_images_per_class=_GENERATE_EVAL_IMAGES.value, image_size=_IMAGE_SIZE.value)

    from alexnet_tf import training

    this_module = FLAGS.get_flags_for_module(sys.modules[__name__])
    config = configs.config_from_flags(
        training.TrainConfig, FLAGS, data_dir=data_dir,
        flags_text=configs.flagfile_text(this_module, "Resolved flags of this run: rerun with --flagfile=THIS_FILE."))
    try:
        result = training.train(config)
    except training.TrainingError as error:
        logger.error("%s", error)
        return 1
    if result.preempted:
        return 143  # 128 + SIGTERM: the state is saved; rerun to resume
    if _EXPORT.value and result.chief and not result.already_finished:
        # The export command's own library call on the final checkpoint (training imports
        # nothing from serving): both write the same float32 SavedModel.
        from alexnet_tf.serving import saved_model

        try:
            path = saved_model.export_run(saved_model.ExportConfig(model_dir=config.model_dir)).path
        except saved_model.ExportError as error:
            logger.error("%s", error)
            return 1
        print(f"Exported the SavedModel to {path}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
