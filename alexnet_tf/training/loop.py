"""The training loop: `train`, the library behind `python -m alexnet_tf.train`.

A custom loop (not Keras `fit`, which fails under MultiWorkerMirroredStrategy in Keras 3,
keras-team/keras#20585) that runs unchanged under every tf.distribute strategy:

- what the run starts from (new, resumed, or weights made elsewhere) is decided once, by
  `start.plan_start`, before anything is built;
- one `tf.function` runs `steps_per_execution` replica steps and returns summed metrics;
- the whole training state (model, optimizer, epoch and step counters, plateau schedule;
  no input state: the input stream is rebuilt at the step's position) is one `tf.train.Checkpoint`, saved to `backup/` every
  `backup_every_steps` steps, at every epoch end and on SIGTERM, and to `checkpoints/` at
  every epoch end. A rerun restores the newest readable one (a torn or corrupt newest falls
  back to the previous with a warning) and continues at the same step with the same data;
- a NaN/Inf loss stops the run before anything is saved, so the last good state survives.

The parts live beside it by job: `config` (what a run is asked), `data` (its data),
`start` (what it starts from), `steps` (the compiled steps), `state` (the state on disk),
`plateau` (the learning-rate schedule), `strategies`, `summaries` (TensorBoard).
"""

import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import time

import numpy as np
import tensorflow as tf
import keras

from alexnet_tf.model.alexnet import build_alexnet
from alexnet_tf.model.metrics import errors_of
from alexnet_tf.model.optimizer import AllReduceLossScaleOptimizer, MomentumSGD, base_optimizer, folds_every_loss
from alexnet_tf import run_dir
from alexnet_tf.training import schedule, strategies, summaries
from alexnet_tf.training.config import NonFiniteLossError, TrainConfig, TrainingError, TrainResult
from alexnet_tf.training.data import damaged_data_error
from alexnet_tf.training.plateau import PlateauSchedule
from alexnet_tf.training.start import RUN_SETTINGS_KEY, freeze_layers, plan_start, run_settings
from alexnet_tf.training.state import TrainingState, write_dir_of
from alexnet_tf.training.steps import evaluate_distributed, make_steps, warmup_factor
from pipelines import schema

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "TrainingError", "build_training_objects", "train"]

logger = logging.getLogger(__name__)



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
    """Turns SIGTERM (preemption) into a flag the loop checks between executions. With several
    workers, `stop_now` is agreed on: every worker stops after the same step when any of them
    got the signal (a cluster scheduler's TERM reaches the workers at different moments; one
    stopping alone would leave the others waiting in a collective)."""

    def __init__(self, strategy=None, num_workers=1):
        self.raised = False
        self._previous = None
        self._any_raised = None
        if num_workers > 1:
            @tf.function
            def any_raised(flag):
                value = strategy.run(lambda: tf.identity(flag))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)  # > 0: some worker

            self._any_raised = any_raised

    def stop_now(self):
        """Whether to save and stop here (called at the same points on every worker)."""
        if self._any_raised is None:
            return self.raised
        return bool(self._any_raised(tf.constant(1.0 if self.raised else 0.0)).numpy() > 0)

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


def build_training_objects(config, strategy, start):
    """(model, optimizer, plateau schedule) of a `RunStart` in the strategy's scope, its
    frozen layers frozen before the optimizer makes its slots."""
    with strategy.scope():
        model = build_alexnet(start.network, seed=config.seed)
        freeze_layers(model, start.freeze_layers)
        # The paper's weight decay inside the update, one pass over the weights (optimizer.py).
        optimizer = MomentumSGD(learning_rate=config.learning_rate, momentum=config.momentum,
                                fold_weight_decay=folds_every_loss(model))
        if config.mixed_precision == "float16":
            # Keras' loss scaling, deciding from the all-reduced gradients (optimizer.py).
            optimizer = AllReduceLossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        plateau = PlateauSchedule(
            config.learning_rate, factor=config.plateau_factor, patience=config.plateau_patience,
            min_delta=config.plateau_min_delta, cooldown=config.plateau_cooldown,
            max_reductions=config.max_lr_reductions)
    return model, optimizer, plateau


def _set_learning_rate(optimizer, value):
    base_optimizer(optimizer).learning_rate = value


def _current_lr(optimizer):
    return float(np.asarray(base_optimizer(optimizer).learning_rate))


@dataclasses.dataclass(frozen=True)
class _Epochs:
    """What every epoch of a run works with (the loop builds it once)."""

    config: object
    state: TrainingState
    model: keras.Model
    optimizer: object
    plateau: PlateauSchedule
    train_steps: object  # (iterator, count, step) -> sums (training.steps)
    iterator: object
    eval_step: object
    eval_dataset: object  # distributed, or None
    writers: dict | None
    steps_per_epoch: int
    sigterm: object


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
    try:
        strategy = strategies.create_strategy(config.strategy, num_virtual_cpus=config.num_virtual_cpus)
    except strategies.StrategyError as error:
        raise TrainingError(str(error)) from None
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise TrainingError(
            f"Expected --batch_size to be divisible by the {replicas} replicas. "
            f"Received: {config.batch_size}")
    logger.info("Training with strategy %s; global batch %d (%d per replica)", strategies.describe(strategy),
                config.batch_size, config.batch_size // replicas)
    keras.utils.set_random_seed(config.seed)
    try:
        run_dir.check_local_path(config.model_dir)
    except ValueError as error:
        raise TrainingError(str(error)) from None
    # One trainer per run directory: the chief holds its lock from before it looks at the
    # directory until the run ends, so no other trainer plans from what it is changing.
    lock = run_dir.RunDirLock(config.model_dir) if strategies.is_chief(strategy) else None
    created = lock is not None and not os.path.exists(config.model_dir)
    if lock:
        try:
            lock.acquire()
        except run_dir.RunDirInUseError as error:
            raise TrainingError(str(error)) from None
    try:
        start = plan_start(config)  # reads model_dir, writes nothing
        try:
            return _train_from(config, strategy, start, on_epoch_end)
        except tf.errors.DataLossError as error:  # TensorFlow's "corrupted record": name the shard
            raise damaged_data_error(start.data, error) from None
    finally:
        if lock:
            lock.release()
        if created and os.listdir(config.model_dir) == [run_dir.LOCK_FILE]:
            shutil.rmtree(config.model_dir, ignore_errors=True)  # refused before writing: leave nothing


def _train_from(config, strategy, start, on_epoch_end):
    data = start.data
    model, optimizer, plateau = build_training_objects(config, strategy, start)
    num_workers, _ = strategies.worker_position(strategy)
    write_dir, scratch = write_dir_of(config.model_dir, strategy)
    chief = scratch is None
    state = TrainingState(model=model, optimizer=optimizer, plateau=plateau,
                          write_dir=write_dir, model_dir=config.model_dir, keep=config.keep_checkpoints)
    # Nothing in model_dir changes before the restore succeeded (a refused resume leaves
    # flags.txt and model_spec.json as the run wrote them).
    restored = start.initialize(state)
    epoch, step = int(state.epoch.numpy()), int(state.step.numpy())
    if restored:
        logger.info("Resuming from %s: epoch %d / step %d (learning rate %g, %d reductions)",
                    restored, epoch, step, plateau.learning_rate.numpy(), plateau.reductions.numpy())
        schedule.resume(config, plateau, state.schedule, epoch=epoch)
    else:
        state.schedule.record_settings(config)
    if chief:
        _write_run_files(config, start)
    finished = _finished_results(config, epoch, plateau) if restored else None
    if finished is not None:
        return TrainResult(epoch, step, bool(plateau.stopped.numpy()), False, finished, chief=chief,
                           already_finished=True)
    warmup_steps = round(config.warmup_epochs * data.steps_per_epoch)
    _set_learning_rate(optimizer, float(plateau.learning_rate.numpy()) * warmup_factor(step, warmup_steps))
    iterator = iter(_training_input(config, strategy, start, step))
    train_steps, eval_step = make_steps(model=model, optimizer=optimizer, strategy=strategy, config=config,
                                        statistics=start.statistics, learning_rate=plateau.learning_rate,
                                        warmup_steps=warmup_steps)
    writers = summaries.create_writers(write_dir) if chief else None
    eval_dataset = strategy.distribute_datasets_from_function(
        lambda context: data.eval_dataset(context, start.statistics)) if data.has_eval else None
    metrics = {}
    preempted = False
    try:
        with _SigtermFlag(strategy, num_workers) as sigterm, _cluster_failures(num_workers):
            epochs = _Epochs(config, state, model, optimizer, plateau, train_steps, iterator, eval_step,
                             eval_dataset, writers, data.steps_per_epoch, sigterm)
            if writers and step == 0 and not config.tf_data_service:  # (a service job has one stream)
                summaries.log_augmented_images(writers, data, start.statistics)
            while epoch < config.epochs and not bool(plateau.stopped.numpy()):
                preempted = _train_epoch(epochs, epoch)
                if preempted:
                    break
                metrics = _end_epoch(epochs, epoch)
                epoch += 1
                if on_epoch_end:
                    on_epoch_end(epoch, metrics)
                if sigterm.stop_now():
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
        return TrainResult(epoch, int(state.step.numpy()), False, True, metrics, chief=chief)
    final = dict(metrics)
    if eval_dataset is not None and config.evaluate_at_end:
        final = evaluate_distributed(eval_step, eval_dataset, max_steps=config.eval_steps)
        _print_final(final)
    if chief:
        _write_results(config.model_dir, epoch, state, plateau, final)
    return TrainResult(epoch, int(state.step.numpy()), bool(plateau.stopped.numpy()), False, final, chief=chief)


def _write_run_files(config, start):
    """model_spec.json (the network, classes, statistics and what a resume must keep) and
    flags.txt (the resolved flags), atomically."""
    extra = {RUN_SETTINGS_KEY: run_settings(config)}
    if start.source:
        extra["init_from"] = os.path.abspath(start.source)
    run_dir.write_model_spec(config.model_dir, network=start.network, class_names=start.data.class_names,
                             statistics=start.statistics, extra=extra)
    if config.flags_text is not None:
        schema.write_text_atomically(os.path.join(config.model_dir, run_dir.FLAGS_FILE), config.flags_text)


def _training_input(config, strategy, start, step):
    """The strategy's distributed input (each replica's batch prefetched to its device), from
    where the run stands: every worker's stream is a function of the seed and its position,
    step x the worker's batch, so a resume continues it exactly without any iterator state.
    A tf.data service stream lives on the service and starts afresh on a resume."""
    num_workers, _ = strategies.worker_position(strategy)
    worker_batch = config.batch_size // num_workers
    position = {} if config.tf_data_service or config.synthetic else dict(
        start_example=step * worker_batch, examples_per_epoch=start.data.steps_per_epoch * worker_batch)
    return strategy.distribute_datasets_from_function(
        lambda context: start.data.train_dataset(context, start.statistics, **position))


def _train_epoch(epochs, epoch):
    """Runs the rest of epoch `epoch`. Returns True if stopped by SIGTERM (state saved)."""
    config, state, optimizer, writers = epochs.config, epochs.state, epochs.optimizer, epochs.writers
    steps_per_epoch = epochs.steps_per_epoch
    first_step = epoch * steps_per_epoch
    done_in_epoch = int(state.step.numpy()) - first_step
    totals = np.zeros(4)
    window_start, window_images = time.perf_counter(), 0
    last_backup = int(state.step.numpy())
    while done_in_epoch < steps_per_epoch:
        count = min(config.steps_per_execution, steps_per_epoch - done_in_epoch)
        # Each step's rate is set inside the call, from the plateau's rate and the step.
        sums = epochs.train_steps(epochs.iterator, tf.constant(count), tf.constant(int(state.step.numpy()), tf.int64)).numpy()
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
            metrics = errors_of(totals)
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
        if epochs.sigterm.stop_now():
            state.save_backup()
            return True
        if step - last_backup >= config.backup_every_steps and done_in_epoch < steps_per_epoch:
            state.save_backup()
            last_backup = step
    return False


def _end_epoch(epochs, epoch):
    """Validates (when the run has validation data), lets the plateau rule decide, writes the
    summaries and the epoch's checkpoint. Returns the validation metrics ({} without)."""
    state, plateau, writers = epochs.state, epochs.plateau, epochs.writers
    metrics = {}
    if epochs.eval_dataset is not None:
        metrics = evaluate_distributed(epochs.eval_step, epochs.eval_dataset, max_steps=epochs.config.eval_steps)
        decision = plateau.update(metrics["top1_error"])
        if decision == "reduced":
            state.schedule.record_reduction(int(state.step.numpy()))
            _set_learning_rate(epochs.optimizer, float(plateau.learning_rate.numpy()))
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
            tf.summary.image("conv1_filters", summaries.conv1_filter_grid(epochs.model, epochs.config.groups), step=step)
            tf.summary.scalar("epoch", epoch + 1, step=step)
    state.epoch.assign(epoch + 1)
    state.save_checkpoint()
    return metrics


def _print_final(final):
    print(f"Final validation: top-1 error {final['top1_error']:.4f} (accuracy "
          f"{1 - final['top1_error']:.4f}), top-5 error {final['top5_error']:.4f} "
          f"over {final['num_examples']} images")


def _finished_results(config, epoch, plateau):
    """The final validation of a run that was already finished (its epochs done or stopped by
    the plateau rule, and its results written): printed again, nothing evaluated or exported.
    None if the run has more to do."""
    if epoch < config.epochs and not bool(plateau.stopped.numpy()):
        return None
    path = os.path.join(config.model_dir, run_dir.RESULTS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, ValueError):
        return None  # ended before its results were written: evaluate and export now
    if results.get("epochs_done") != epoch:
        return None
    final = results.get("final_validation") or {}
    if {"top1_error", "top5_error", "num_examples"} <= set(final):
        _print_final(final)
    print(f"This run is finished: {schedule.finished_message(config, epoch=epoch, plateau=plateau)}. Nothing "
          f"was trained, evaluated or exported; export again with python -m alexnet_tf.export "
          f"--model_dir={config.model_dir}")
    return final


def _write_results(model_dir, epoch, state, plateau, final):
    schema.write_json_atomically(os.path.join(model_dir, run_dir.RESULTS_FILE), {
        "epochs_done": epoch, "steps_done": int(state.step.numpy()),
        "plateau": dict(plateau.state(), reduction_steps=state.schedule.reductions()),
        "final_validation": final})

