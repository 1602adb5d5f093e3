"""The compiled steps of a training run under any tf.distribute strategy: a training function
that runs several replica steps per call, and an evaluation step, both returning
`metrics.batch_sums` totals.

Batches arrive as uint8 crops (`pipelines.build_dataset(output_dtype=tf.uint8)`): each
replica flips, lights and centres its own share on its device, inside the compiled step
(`pipelines.augment.flip_light_centre`, the input pipeline's own function), with stateless
seeds from the run's seed and the batch's position in the run (global step and replica), so
a resumed run draws exactly what an uninterrupted one would. Evaluation subtracts the mean
there too. float32 batches (already centred) pass through unchanged.
"""

import dataclasses

import numpy as np
import tensorflow as tf
import keras

from alexnet_tf.model import metrics
from alexnet_tf.model.optimizer import base_optimizer, losses_to_differentiate
from pipelines import augment, constants


@dataclasses.dataclass(frozen=True)
class DeviceInputs:
    """uint8 crops to the model's float32 input, on the replica's device; float32 input passes
    as it is. Training draws (`draw`, outside XLA: its generator gives other numbers) and then
    applies (`apply`, where XLA may compile it); `train` does both."""

    draw: object  # (images, step) -> (flips, alphas), or None for float32 images
    apply: object  # (images, draws) -> float32 images
    eval: object  # images -> float32 images

    def train(self, images, step):
        return self.apply(images, self.draw(images, step))


def make_device_inputs(statistics, *, seed, num_replicas, lighting_stddev=constants.PCA_LIGHTING_STDDEV,
                       random_flip=True):
    """The `DeviceInputs` of a run: each replica's flips and lighting drawn with the host
    pipeline's streams (seed + 1, seed + 2) at position step x num_replicas + replica."""
    mean = tf.constant(statistics.rgb_mean, tf.float32)
    eigval = tf.constant(statistics.rgb_eigval, tf.float32)
    eigvec = tf.constant(statistics.rgb_eigvec, tf.float32)

    def draw(images, step):
        if images.dtype != tf.uint8:
            return None
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        position = tf.cast(step, tf.int64) * num_replicas + replica
        seeds = tf.stack([tf.stack([tf.constant(seed + 1, tf.int64), position]),
                          tf.stack([tf.constant(seed + 2, tf.int64), position])])
        return augment.draw_flips_and_alphas(tf.shape(images)[0], seeds, lighting_stddev, random_flip)

    def apply(images, draws):
        if draws is None:
            return images
        return augment.apply_flip_light_centre(images, *draws, rgb_mean=mean, eigval=eigval, eigvec=eigvec)

    def eval_inputs(images):
        return tf.cast(images, tf.float32) - mean if images.dtype == tf.uint8 else images

    return DeviceInputs(draw, apply, eval_inputs)


def warmup_factor(step, warmup_steps):
    """The warm-up's share of the rate for the step after `step` steps: (step + 1) /
    warmup_steps, up to 1 (1 without a warm-up). Python numbers or tensors."""
    if warmup_steps <= 0:
        return 1.0
    if isinstance(step, (int, float)):
        return min(1.0, (step + 1) / warmup_steps)
    return tf.minimum(tf.constant(1.0, tf.float64), tf.cast(step + 1, tf.float64) / warmup_steps)


def make_steps(*, model, optimizer, strategy, config, statistics=None, learning_rate=None, warmup_steps=0):
    """(train_steps(iterator, num_steps, first_step), eval_step(images, labels)).

    `statistics` (the mean and PCA of the data) are needed for uint8 batches. With
    `learning_rate` (a float64 variable: the plateau rule's rate), every step's rate is set
    inside the compiled function before that step, `learning_rate x warmup_factor(step,
    warmup_steps)`: a function of the recorded state and the step, exact whatever the number of
    steps per call."""
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    if statistics is None:
        from pipelines.dataset import DatasetStatistics

        statistics = DatasetStatistics()
    inputs = make_device_inputs(statistics, seed=getattr(config, "seed", 0) or 0,
                                num_replicas=strategy.num_replicas_in_sync,
                                lighting_stddev=getattr(config, "lighting_stddev", constants.PCA_LIGHTING_STDDEV),
                                random_flip=getattr(config, "random_flip", True))

    def replica_train_step(images, labels, draws):
        images = inputs.apply(images, draws)
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
        return metrics.batch_sums(per_example, logits, labels)

    def replica_eval_step(images, labels):
        images = inputs.eval(images)
        # An empty final batch on a replica skips the model (see serving/evaluation.py).
        return tf.cond(tf.shape(images)[0] > 0, lambda: replica_eval_sums(images, labels),
                       lambda: tf.zeros([4], tf.float64))

    def replica_eval_sums(images, labels):
        probabilities = metrics.class_probabilities(model, images)
        log_probabilities = tf.math.log(probabilities + 1e-12)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, log_probabilities, from_logits=True)
        return metrics.batch_sums(per_example, log_probabilities, labels)

    compiled_step = _maybe_jit(replica_train_step, config.jit_compile)

    def replica_step(batch, step):
        images, labels = batch
        # The augmentation's draws outside XLA, so --jit_compile trains on the same draws.
        return compiled_step(images, labels, inputs.draw(images, step))

    rate = base_optimizer(optimizer).learning_rate if learning_rate is not None else None

    @tf.function  # XLA (--jit_compile) compiles the replica step inside
    def train_steps(iterator, num_steps, first_step=tf.constant(0, tf.int64)):
        totals = tf.zeros([4], tf.float64)
        for i in tf.range(num_steps):
            step = first_step + tf.cast(i, tf.int64)
            if rate is not None:
                rate.assign(tf.cast(learning_rate * warmup_factor(step, warmup_steps), rate.dtype))
            # Each replica's own batch, already on its device (the strategy's distributed input).
            batch = next(iterator)
            sums = strategy.run(replica_step, args=(batch, step))
            totals += strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)
        return totals

    @tf.function
    def eval_step(images, labels):
        sums = strategy.run(replica_eval_step, args=(images, labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    return train_steps, eval_step


def _maybe_jit(fn, jit_compile):
    return tf.function(fn, jit_compile=True) if jit_compile else fn


def evaluate_distributed(eval_step, dataset, *, max_steps=0):
    """Summed metrics over a distributed evaluation dataset (every example once)."""
    totals = np.zeros(4)
    for step, (images, labels) in enumerate(dataset):
        if max_steps and step >= max_steps:
            break
        totals += eval_step(images, labels).numpy()
    return metrics.errors_of(totals)
