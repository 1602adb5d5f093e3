"""The compiled steps of a training run under any tf.distribute strategy: a training function
that runs several replica steps per call, and an evaluation step, both returning
`metrics.batch_sums` totals."""

import numpy as np
import tensorflow as tf
import keras

from alexnet_tf.model import metrics
from alexnet_tf.model.optimizer import losses_to_differentiate
from alexnet_tf.training.strategies import worker_position


def make_steps(*, model, optimizer, strategy, config):
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
        return metrics.batch_sums(per_example, logits, labels)

    def replica_eval_step(images, labels):
        # An empty final batch on a replica skips the model (see serving/evaluation.py).
        return tf.cond(tf.shape(images)[0] > 0, lambda: replica_eval_sums(images, labels),
                       lambda: tf.zeros([4], tf.float64))

    def replica_eval_sums(images, labels):
        probabilities = metrics.class_probabilities(model, images)
        log_probabilities = tf.math.log(probabilities + 1e-12)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, log_probabilities, from_logits=True)
        return metrics.batch_sums(per_example, log_probabilities, labels)

    num_workers, _ = worker_position(strategy)
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
