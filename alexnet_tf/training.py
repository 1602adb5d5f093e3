"""Training: the library behind `python -m alexnet_tf.train`.

A custom loop (not Keras `fit`, which fails under MultiWorkerMirroredStrategy in Keras 3,
keras-team/keras#20585) that runs unchanged under every tf.distribute strategy:

- one `tf.function` runs `steps_per_execution` replica steps and returns summed metrics;
- the whole training state (model, optimizer, input iterator, epoch and step counters,
  plateau schedule) is one `tf.train.Checkpoint`, saved to `backup/` every
  `backup_every_steps` steps, at every epoch end and on SIGTERM, and to `checkpoints/` at
  every epoch end. A rerun restores the newest readable one (a torn or corrupt newest falls
  back to the previous with a warning) and continues at the same step with the same data;
- a NaN/Inf loss stops the run before anything is saved, so the last good state survives.
"""

import dataclasses
import logging
import math
import os
import shutil
import signal
import tempfile
import time

import numpy as np
import tensorflow as tf
import keras

from alexnet_tf import evaluation, runs
from alexnet_tf import strategy as strategies
from alexnet_tf.model import build_alexnet
from alexnet_tf.optimizer import MomentumSGD, folds_every_loss, losses_to_differentiate
from alexnet_tf.plateau import PlateauSchedule

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = runs.CHECKPOINTS_DIR
BACKUP_DIR = runs.BACKUP_DIR
LOGS_DIR = "logs"
FLAGS_FILE = "flags.txt"
RESULTS_FILE = "train_results.json"
EXPORT_DIR = "export"


class TrainingError(Exception):
    """A run that cannot go on (bad input, NaN loss); the message says why and what to do."""


class NonFiniteLossError(TrainingError):
    pass


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str
    # Data: shards in data_dir, or explicit patterns, or a prepared TFDS dataset, or synthetic.
    data_dir: str | None = None
    train_files: str | None = None
    eval_files: str | None = None
    tfds_name: str | None = None
    tfds_data_dir: str | None = None
    synthetic: bool = False
    tf_data_service: str | None = None  # grpc://HOST:PORT of a tf.data service dispatcher
    num_classes: int = 0  # 0: from dataset_info.json
    image_size: int = 224
    # The paper's recipe.
    batch_size: int = 128
    epochs: int = 90
    steps_per_epoch: int = 0  # 0: training examples // batch_size
    eval_steps: int = 0  # 0: the whole validation split
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float = 0.5
    groups: int = 2
    lrn: bool = True
    init: str = "paper"
    conv_filters: tuple = (96, 256, 384, 384, 256)
    fc_units: int = 4096
    plateau_factor: float = 0.1
    plateau_patience: int = 1
    plateau_min_delta: float = 0.0
    plateau_cooldown: int = 0
    max_lr_reductions: int = 3
    # Machinery.
    strategy: str = "auto"
    num_virtual_cpus: int = 0
    mixed_precision: str = "none"
    jit_compile: bool = False
    steps_per_execution: int = 1
    seed: int = 0
    shuffle_buffer: int = 10_000
    keep_checkpoints: int = 3
    backup_every_steps: int = 100
    log_every_steps: int = 50
    evaluate_at_end: bool = True
    export_at_end: bool = True


@dataclasses.dataclass(frozen=True)
class TrainResult:
    epochs_done: int
    steps_done: int
    stopped_by_plateau: bool
    preempted: bool
    final_metrics: dict
    export_path: str | None = None


# ---------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass(frozen=True)
class _Data:
    train_fn: object  # input_context -> tf.data.Dataset
    eval_fn: object  # input_context -> tf.data.Dataset, or None
    num_classes: int
    steps_per_epoch: int
    num_eval_examples: int | None
    statistics: object
    class_names: tuple


def _resolve_data(config):
    from pipelines import dataset as datasets
    from pipelines import schema

    if config.synthetic:
        num_classes = config.num_classes or 1000
        steps = config.steps_per_epoch or 100

        def synthetic(input_context):
            batch = input_context.get_per_replica_batch_size(config.batch_size) if input_context else config.batch_size
            images = tf.random.stateless_uniform([batch, config.image_size, config.image_size, 3],
                                                 seed=(config.seed, 0), minval=-128.0, maxval=128.0)
            labels = tf.random.stateless_uniform([batch], seed=(config.seed, 1), maxval=num_classes,
                                                 dtype=tf.int32)
            return tf.data.Dataset.from_tensors((images, labels)).repeat()

        return _Data(synthetic, None, num_classes, steps, None, datasets.DatasetStatistics(), ())

    if config.tfds_name:
        import tensorflow_datasets as tfds

        builder = tfds.builder(config.tfds_name, data_dir=config.tfds_data_dir)
        num_classes = config.num_classes or builder.info.features["label"].num_classes
        train_examples = builder.info.splits["train"].num_examples
        eval_examples = builder.info.splits["validation"].num_examples
        statistics = datasets.DatasetStatistics(num_classes=num_classes)
        source = dict(tfds_name=config.tfds_name)
        train_pattern = eval_pattern = config.tfds_data_dir
    else:
        train_pattern = config.train_files or schema.split_file_pattern(config.data_dir, schema.TRAIN_SPLIT)
        eval_pattern = config.eval_files or (
            schema.split_file_pattern(config.data_dir, schema.VALIDATION_SPLIT) if config.data_dir else None)
        info_dir = config.data_dir or os.path.dirname(train_pattern)
        statistics = datasets.load_statistics(info_dir)
        num_classes = config.num_classes or statistics.num_classes
        if not num_classes:
            raise TrainingError(
                f"No --num_classes and no class list in {info_dir}/dataset_info.json. Pass "
                "--num_classes, or point --data_dir at the output of pipelines.convert.")
        train_examples = statistics.splits.get(schema.TRAIN_SPLIT)
        eval_examples = statistics.splits.get(schema.VALIDATION_SPLIT)
        if eval_pattern and not tf.io.gfile.glob(eval_pattern):
            logger.warning("No validation shards match %s: training without evaluation.", eval_pattern)
            eval_pattern = None
        source = {}
    steps = config.steps_per_epoch or (train_examples or 0) // config.batch_size
    if steps < 1:
        raise TrainingError(
            f"Cannot tell the steps per epoch: {train_examples} training examples for a batch of "
            f"{config.batch_size}. Pass --steps_per_epoch, or a smaller --batch_size.")

    def train_fn(input_context):
        return datasets.build_dataset(
            train_pattern, training=True, batch_size=config.batch_size, image_size=config.image_size,
            seed=config.seed, statistics=statistics, input_context=input_context,
            shuffle_buffer=config.shuffle_buffer, data_service=config.tf_data_service, **source)

    def eval_fn(input_context):
        return datasets.build_dataset(
            eval_pattern, training=False, batch_size=config.batch_size, image_size=config.image_size,
            statistics=statistics, input_context=input_context, **source)

    return _Data(train_fn, eval_fn if eval_pattern else None, num_classes, steps, eval_examples,
                 statistics, statistics.class_names)


# ---------------------------------------------------------------------------------------
# The run directory


def _write_dir(model_dir, strategy):
    """model_dir for the chief; a scratch folder for other workers (deleted at the end)."""
    if strategies.is_chief(strategy):
        return model_dir, None
    scratch = tempfile.mkdtemp(prefix="alexnet_worker_")
    return scratch, scratch


class _TrainingState:
    """The checkpointed state and its two managers (epoch checkpoints and restart backups)."""

    def __init__(self, *, model, optimizer, iterator, plateau, write_dir, model_dir, keep):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        # A tf.data service stream lives on the service: its position cannot be saved.
        parts = dict(iterator=iterator) if iterator is not None else {}
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, plateau=plateau, epoch=self.epoch, step=self.step, **parts)
        self.model_dir = model_dir
        self.checkpoints = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(write_dir, CHECKPOINTS_DIR), max_to_keep=keep,
            checkpoint_name="ckpt")
        self.backups = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(write_dir, BACKUP_DIR), max_to_keep=2, checkpoint_name="backup")

    def restore_newest(self):
        """Restores the newest readable state of model_dir. Returns its path or None."""
        candidates = []
        for folder, prefix in ((BACKUP_DIR, "backup"), (CHECKPOINTS_DIR, "ckpt")):
            state = tf.train.get_checkpoint_state(os.path.join(self.model_dir, folder))
            for path in (state.all_model_checkpoint_paths if state else []):
                candidates.append(path)
        # Newest first; a backup and an epoch checkpoint of the same step are the same state.
        ordered = sorted(candidates, key=_checkpoint_step, reverse=True)
        for index, path in enumerate(ordered):
            try:
                self.checkpoint.read(path).assert_existing_objects_matched().expect_partial()
                return path
            except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
                logger.warning("Cannot restore %s (%s); falling back to an older checkpoint.",
                               path, str(error).splitlines()[0][:200])
        if ordered:
            raise TrainingError(
                f"No readable checkpoint in {self.model_dir} (tried {len(ordered)}). Move the run "
                "directory away to start over.")
        return None

    def save_backup(self):
        self._check_finite()
        self.backups.save(checkpoint_number=int(self.step.numpy()))

    def save_checkpoint(self):
        self._check_finite()
        self.checkpoints.save(checkpoint_number=int(self.step.numpy()))
        self.backups.save(checkpoint_number=int(self.step.numpy()))

    def _check_finite(self):
        # Never let NaN/Inf weights replace the last good state.
        model = self.checkpoint.model
        finite = all(bool(tf.reduce_all(tf.math.is_finite(v.value))) for v in model.trainable_variables)
        if not finite:
            raise NonFiniteLossError(
                f"The weights hold NaN/Inf at step {int(self.step.numpy())}. Nothing was saved: the "
                f"last good state is in {self.model_dir}. Lower --learning_rate or check the data.")


def _checkpoint_step(path):
    """The global step in a checkpoint's name (both managers number checkpoints by step)."""
    suffix = path.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


# ---------------------------------------------------------------------------------------
# Steps


def _make_steps(*, model, optimizer, strategy, config, num_classes):
    top_k = min(5, num_classes)
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
            regularization = losses_to_differentiate(model, optimizer)
            if regularization:  # Empty when the optimizer applies the paper's decay itself.
                # Counted once across replicas (the replicas' gradients are summed).
                loss += tf.nn.scale_regularization_loss(tf.add_n(regularization))
            scaled = optimizer.scale_loss(loss) if loss_scaled else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return _sums(per_example, logits, labels, top_k)

    def replica_eval_step(images, labels):
        # An empty final batch on a replica skips the model (see evaluation.evaluate).
        return tf.cond(tf.shape(images)[0] > 0, lambda: replica_eval_sums(images, labels),
                       lambda: tf.zeros([4], tf.float64))

    def replica_eval_sums(images, labels):
        probabilities = evaluation.class_probabilities(model, images)
        log_probabilities = tf.math.log(probabilities + 1e-12)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, log_probabilities, from_logits=True)
        return _sums(per_example, log_probabilities, labels, top_k)

    num_workers, _ = _worker_position(strategy)
    local_replicas = strategy.num_replicas_in_sync // num_workers
    per_replica = config.batch_size // strategy.num_replicas_in_sync
    replica_step = _maybe_jit(lambda batch: replica_train_step(*batch), config.jit_compile)

    @tf.function  # XLA (--jit_compile) compiles the replica step inside
    def train_steps(iterator, num_steps):
        totals = tf.zeros([4], tf.float64)
        for _ in tf.range(num_steps):
            # The worker's batch from a plain (checkpointable) iterator, split over its replicas.
            images, labels = next(iterator)

            def replica_slice(context, images=images, labels=labels):
                start = (context.replica_id_in_sync_group % local_replicas) * per_replica
                return images[start:start + per_replica], labels[start:start + per_replica]

            batch = strategy.experimental_distribute_values_from_function(replica_slice)
            sums = strategy.run(replica_step, args=(batch,))
            totals += strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)
        return totals

    @tf.function
    def eval_step(images, labels):
        sums = strategy.run(replica_eval_step, args=(images, labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    return train_steps, eval_step


def _worker_position(strategy):
    """(number of workers, this worker's index) of the strategy's cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1, 0
    spec = resolver.cluster_spec().as_dict()
    workers = sorted(spec.get("chief", [])) + list(spec.get("worker", []))
    index = resolver.task_id + (len(spec.get("chief", [])) if resolver.task_type == "worker" else 0)
    return len(workers), index


def _maybe_jit(fn, jit_compile):
    return tf.function(fn, jit_compile=True) if jit_compile else fn


def _sums(per_example_loss, logits, labels, top_k):
    """[loss sum, top-1 correct, top-k correct, examples] of one replica batch, float64."""
    labels = tf.cast(labels, tf.int32)
    top1 = tf.math.in_top_k(labels, logits, 1)
    topk = tf.math.in_top_k(labels, logits, top_k)
    return tf.stack([
        tf.reduce_sum(tf.cast(per_example_loss, tf.float64)),
        tf.reduce_sum(tf.cast(top1, tf.float64)),
        tf.reduce_sum(tf.cast(topk, tf.float64)),
        tf.cast(tf.size(labels), tf.float64),
    ])


def _metrics(totals):
    loss, top1, top5, count = (float(v) for v in totals)
    count = max(count, 1.0)
    return {"loss": loss / count, "top1_error": 1.0 - top1 / count, "top5_error": 1.0 - top5 / count,
            "num_examples": int(totals[3])}


def evaluate_distributed(eval_step, dataset, *, max_steps=0):
    """Summed metrics over a distributed evaluation dataset (every example once)."""
    totals = np.zeros(4)
    for step, (images, labels) in enumerate(dataset):
        if max_steps and step >= max_steps:
            break
        totals += eval_step(images, labels).numpy()
    return _metrics(totals)


# ---------------------------------------------------------------------------------------
# TensorBoard


def _image_grid(images, columns):
    """[N, H, W, C] in [0, 1] -> [1, rows*H, columns*W, C] with 1-px gaps."""
    count, height, width, channels = images.shape
    rows = math.ceil(count / columns)
    grid = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, channels), np.float32)
    for index in range(count):
        r, c = divmod(index, columns)
        grid[r * (height + 1):r * (height + 1) + height, c * (width + 1):c * (width + 1) + width] = images[index]
    return grid[np.newaxis]


def conv1_filter_grid(model):
    """The conv1 kernels as one image (the paper's Figure 3): one row block per group."""
    kernel = model.get_layer("conv1").kernel.numpy()  # [11, 11, 3, 96]
    filters = np.transpose(kernel, (3, 0, 1, 2))
    low, high = filters.min(axis=(1, 2, 3), keepdims=True), filters.max(axis=(1, 2, 3), keepdims=True)
    filters = (filters - low) / np.maximum(high - low, 1e-12)
    return _image_grid(filters, columns=max(1, len(filters) // 4))


def _augmented_grid(images, mean):
    pixels = np.clip((np.asarray(images[:16], np.float32) + np.asarray(mean, np.float32)) / 255.0, 0, 1)
    return _image_grid(pixels, columns=8)


# ---------------------------------------------------------------------------------------
# The loop


class _cluster_failures:  # noqa: N801  (a context manager used like a function)
    """Turns a collective failure in a multi-worker run into a TrainingError that says what to do."""

    _ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
               tf.errors.CancelledError, tf.errors.InternalError, tf.errors.UnknownError)

    def __init__(self, num_workers):
        self._num_workers = num_workers

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if self._num_workers > 1 and exc is not None and isinstance(exc, self._ERRORS):
            first_line = (exc.message or "").strip().splitlines()[0][:300] if exc.message else type(exc).__name__
            raise TrainingError(
                f"A worker of the {self._num_workers}-worker cluster failed or became unreachable "
                f"({type(exc).__name__}: {first_line}). Restart: rerun every worker with the same "
                "command; training resumes from the last checkpoint.") from exc
        return False


class _SigtermFlag:
    """Turns SIGTERM (preemption) into a flag the loop checks between executions."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.raised = True

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _set_precision(mixed_precision):
    policy = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[mixed_precision]
    keras.mixed_precision.set_global_policy(policy)


def _build_kwargs(config, num_classes):
    return dict(num_classes=num_classes, image_size=config.image_size, groups=config.groups,
                dropout=config.dropout, lrn=config.lrn, weight_decay=config.weight_decay,
                init=config.init, conv_filters=list(config.conv_filters), fc_units=config.fc_units)


def _build(config, strategy, num_classes):
    with strategy.scope():
        kwargs = _build_kwargs(config, num_classes)
        kwargs["conv_filters"] = tuple(kwargs["conv_filters"])
        model = build_alexnet(**kwargs, seed=config.seed)
        # The paper's weight decay inside the update, one pass over the weights (optimizer.py).
        optimizer = MomentumSGD(learning_rate=config.learning_rate, momentum=config.momentum,
                                fold_weight_decay=folds_every_loss(model))
        if config.mixed_precision == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        plateau = PlateauSchedule(
            config.learning_rate, factor=config.plateau_factor, patience=config.plateau_patience,
            min_delta=config.plateau_min_delta, cooldown=config.plateau_cooldown,
            max_reductions=config.max_lr_reductions)
    return model, optimizer, plateau


def _set_learning_rate(optimizer, value):
    inner = optimizer.inner_optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else optimizer
    inner.learning_rate = value


def train(config, *, on_epoch_end=None):
    """Trains AlexNet as `config` says, resuming from `config.model_dir` if it holds a run.

    Args:
      config: a `TrainConfig`.
      on_epoch_end: optional callable(epoch, metrics) for tests and tools.

    Returns:
      A `TrainResult`.

    Raises:
      TrainingError: bad data or arguments, or a NaN/Inf loss (nothing is saved then).
    """
    _set_precision(config.mixed_precision)
    try:
        return _train(config, on_epoch_end)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _train(config, on_epoch_end):
    strategy = strategies.create_strategy(config.strategy, num_virtual_cpus=config.num_virtual_cpus)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise TrainingError(
            f"Expected --batch_size to be divisible by the {replicas} replicas. "
            f"Received: {config.batch_size}")
    logger.info("Training with strategy %s; global batch %d (%d per replica)", strategies.describe(strategy),
                config.batch_size, config.batch_size // replicas)
    keras.utils.set_random_seed(config.seed)
    data = _resolve_data(config)
    model, optimizer, plateau = _build(config, strategy, data.num_classes)
    # Training input: this worker's share of the global batch from a plain tf.data iterator,
    # which (unlike a distributed iterator) can be checkpointed for an exact resume.
    num_workers, worker_index = _worker_position(strategy)
    iterator = iter(data.train_fn(tf.distribute.InputContext(
        num_input_pipelines=num_workers, input_pipeline_id=worker_index,
        num_replicas_in_sync=num_workers)))
    write_dir, scratch = _write_dir(config.model_dir, strategy)
    chief = scratch is None
    if chief:
        runs.write_model_spec(config.model_dir, build_kwargs=_build_kwargs(config, data.num_classes),
                              class_names=data.class_names, statistics=data.statistics)
    # The input position is part of the checkpoint on one worker. Not with a tf.data service
    # (the stream lives there) nor with several workers: each reads other files, and only
    # the chief's state reaches model_dir. There a resume restarts the (seeded) input stream.
    checkpointed_iterator = None if (config.tf_data_service or num_workers > 1) else iterator
    state = _TrainingState(model=model, optimizer=optimizer, iterator=checkpointed_iterator, plateau=plateau,
                           write_dir=write_dir, model_dir=config.model_dir, keep=config.keep_checkpoints)
    restored = state.restore_newest()
    epoch, step = int(state.epoch.numpy()), int(state.step.numpy())
    if restored:
        logger.info("Resuming from %s: epoch %d / step %d (learning rate %g, %d reductions)",
                    restored, epoch, step, plateau.learning_rate.numpy(), plateau.reductions.numpy())
    _set_learning_rate(optimizer, float(plateau.learning_rate.numpy()))
    train_steps, eval_step = _make_steps(model=model, optimizer=optimizer, strategy=strategy,
                                         config=config, num_classes=data.num_classes)
    writers = _summary_writers(write_dir) if chief else None
    eval_dataset = strategy.distribute_datasets_from_function(data.eval_fn) if data.eval_fn else None
    metrics = {}
    preempted = False
    try:
        with _SigtermFlag() as sigterm, _cluster_failures(num_workers):
            if writers and step == 0 and not config.tf_data_service:  # (a service job has one stream)
                _log_augmented_images(writers, data, config)
            while epoch < config.epochs and not bool(plateau.stopped.numpy()):
                preempted = _train_epoch(config, state, train_steps, iterator, optimizer, writers,
                                         data.steps_per_epoch, sigterm, epoch)
                if preempted:
                    break
                metrics = _end_epoch(config, state, plateau, optimizer, model, eval_step,
                                     eval_dataset, writers, epoch)
                epoch += 1
                if on_epoch_end:
                    on_epoch_end(epoch, metrics)
                if sigterm.raised:
                    preempted = True
                    break
    finally:
        if writers:
            for writer in writers.values():
                writer.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if preempted:
        logger.warning("SIGTERM: saved the training state at epoch %d / step %d; rerun the same "
                       "command to resume.", epoch, int(state.step.numpy()))
        return TrainResult(epoch, int(state.step.numpy()), False, True, metrics)
    final = dict(metrics)
    if eval_dataset is not None and config.evaluate_at_end:
        final = evaluate_distributed(eval_step, eval_dataset, max_steps=config.eval_steps)
        print(f"Final validation: top-1 error {final['top1_error']:.4f} (accuracy "
              f"{1 - final['top1_error']:.4f}), top-5 error {final['top5_error']:.4f} "
              f"over {final['num_examples']} images")
    export_path = None
    if chief:
        _write_results(config.model_dir, epoch, state, plateau, final)
        if config.export_at_end:
            from alexnet_tf import exporting

            export_path = exporting.export_model(
                model, export_dir=os.path.join(config.model_dir, EXPORT_DIR),
                class_names=data.class_names, statistics=data.statistics, image_size=config.image_size)
            print(f"Exported the SavedModel to {export_path}")
    return TrainResult(epoch, int(state.step.numpy()), bool(plateau.stopped.numpy()), False, final,
                       export_path)


def _summary_writers(write_dir):
    return {name: tf.summary.create_file_writer(os.path.join(write_dir, LOGS_DIR, name))
            for name in ("train", "validation")}


def _log_augmented_images(writers, data, config):
    images, _ = next(iter(data.train_fn(None)))
    with writers["train"].as_default():
        tf.summary.image("augmented_training_images", _augmented_grid(images.numpy(), data.statistics.rgb_mean), step=0)


def _train_epoch(config, state, train_steps, iterator, optimizer, writers, steps_per_epoch, sigterm, epoch):
    """Runs the rest of epoch `epoch`. Returns True if stopped by SIGTERM (state saved)."""
    first_step = epoch * steps_per_epoch
    done_in_epoch = int(state.step.numpy()) - first_step
    totals = np.zeros(4)
    window_start, window_images = time.perf_counter(), 0
    last_backup = int(state.step.numpy())
    while done_in_epoch < steps_per_epoch:
        count = min(config.steps_per_execution, steps_per_epoch - done_in_epoch)
        sums = train_steps(iterator, tf.constant(count)).numpy()
        if not math.isfinite(sums[0]):
            raise NonFiniteLossError(
                f"The training loss became {sums[0] / max(sums[3], 1):g} at epoch {epoch} / step "
                f"{int(state.step.numpy()) + count}. Nothing was saved: the last good state is in "
                f"{config.model_dir}. Lower --learning_rate or check the input data.")
        totals += sums
        state.step.assign_add(count)
        done_in_epoch += count
        window_images += int(sums[3])
        step = int(state.step.numpy())
        if step // config.log_every_steps != (step - count) // config.log_every_steps or done_in_epoch == steps_per_epoch:
            seconds = time.perf_counter() - window_start
            metrics = _metrics(totals)
            rate = window_images / max(seconds, 1e-9)
            logger.info("epoch %d/%d step %d/%d: loss %.4f, top-1 error %.4f, top-5 error %.4f, "
                        "lr %g, %.1f images/s", epoch + 1, config.epochs, done_in_epoch, steps_per_epoch,
                        metrics["loss"], metrics["top1_error"], metrics["top5_error"],
                        float(_current_lr(optimizer)), rate)
            if writers:
                with writers["train"].as_default():
                    for name in ("loss", "top1_error", "top5_error"):
                        tf.summary.scalar(name, metrics[name], step=step)
                    tf.summary.scalar("learning_rate", float(_current_lr(optimizer)), step=step)
                    tf.summary.scalar("images_per_second", rate, step=step)
            totals = np.zeros(4)
            window_start, window_images = time.perf_counter(), 0
        if sigterm.raised:
            state.save_backup()
            return True
        if step - last_backup >= config.backup_every_steps and done_in_epoch < steps_per_epoch:
            state.save_backup()
            last_backup = step
    return False


def _current_lr(optimizer):
    inner = optimizer.inner_optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else optimizer
    return float(np.asarray(inner.learning_rate))


def _end_epoch(config, state, plateau, optimizer, model, eval_step, eval_dataset, writers, epoch):
    metrics = {}
    if eval_dataset is not None:
        metrics = evaluate_distributed(eval_step, eval_dataset, max_steps=config.eval_steps)
        decision = plateau.update(metrics["top1_error"])
        if decision == "reduced":
            _set_learning_rate(optimizer, float(plateau.learning_rate.numpy()))
        logger.info("epoch %d validation: loss %.4f, top-1 error %.4f, top-5 error %.4f (%s; lr %g, "
                    "%d reductions)", epoch + 1, metrics["loss"], metrics["top1_error"],
                    metrics["top5_error"], decision, plateau.learning_rate.numpy(),
                    plateau.reductions.numpy())
        if decision == "stop":
            logger.info("Validation error stopped improving after %d learning-rate reductions: "
                        "stopping.", plateau.reductions.numpy())
    if writers:
        step = int(state.step.numpy())
        with writers["validation"].as_default():
            for name in ("loss", "top1_error", "top5_error"):
                if name in metrics:
                    tf.summary.scalar(name, metrics[name], step=step)
        with writers["train"].as_default():
            tf.summary.image("conv1_filters", conv1_filter_grid(model), step=step)
            tf.summary.scalar("epoch", epoch + 1, step=step)
    state.epoch.assign(epoch + 1)
    state.save_checkpoint()
    return metrics


def _write_results(model_dir, epoch, state, plateau, final):
    from pipelines import schema

    schema.write_json_atomically(os.path.join(model_dir, RESULTS_FILE), {
        "epochs_done": epoch, "steps_done": int(state.step.numpy()), "plateau": plateau.state(),
        "final_validation": final})

