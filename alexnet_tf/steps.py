"""The compiled steps of a training run under any tf.distribute strategy, and their metrics:
a training function that runs several replica steps per call, and an evaluation step."""

import numpy as np
import tensorflow as tf
import keras

from alexnet_tf import evaluation
from alexnet_tf.optimizer import losses_to_differentiate


def make_steps(*, model, optimizer, strategy, config, num_classes):
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


def worker_position(strategy):
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


def metrics_of(totals):
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
    return metrics_of(totals)
