"""Evaluation of a run's checkpoint: the library behind `python -m alexnet_tf.evaluate`.

Top-1 and top-5 error as the paper reports them, on the centre crop or on the paper's ten
crops (four corners, centre and their mirrors, softmax averaged), under any strategy; every
validation image counts exactly once, whatever the batch size.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from alexnet_tf.model.metrics import class_probabilities, top_k_hits
from alexnet_tf import run_dir
from alexnet_tf.training import strategies


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    model_dir: str
    eval_files: str
    checkpoint: str | None = None
    crops: int = 1
    batch_size: int = 128
    strategy: str = "auto"
    num_virtual_cpus: int = 0


def evaluate(config):
    """Evaluates the checkpoint. Returns a dict: top1_error, top5_error, num_examples, crops,
    checkpoint, per_class_top1_error ({class id: {name, top1_error, num_examples}})."""
    strategy = strategies.create_strategy(config.strategy, num_virtual_cpus=config.num_virtual_cpus)
    with strategy.scope():
        model, spec, checkpoint = run_dir.load_model(config.model_dir, config.checkpoint)
    statistics = run_dir.statistics_of(spec)
    network = run_dir.network_of(spec)
    num_classes, image_size = network.num_classes, network.image_size
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"Expected --batch_size to be divisible by the {strategy.num_replicas_in_sync} "
                         f"replicas. Received: {config.batch_size}")
    from pipelines import dataset as datasets

    dataset = strategy.distribute_datasets_from_function(lambda context: datasets.build_eval_dataset(
        datasets.Source(config.eval_files), datasets.EvalOptions(
            batch_size=config.batch_size, image_size=image_size, crops=config.crops, statistics=statistics,
            input_context=context,
            # Ten crops are the paper's; a single crop is the one the weights were measured with.
            preprocessing=run_dir.preprocessing_of(spec) if config.crops == 1 else "paper")))

    def replica_step(images, labels):
        # A replica can get an empty final batch; TensorFlow's CPU conv and pooling kernels
        # return wrong shapes for empty inputs, so an empty batch skips the model.
        return tf.cond(tf.shape(images)[0] > 0, lambda: replica_sums(images, labels),
                       lambda: (tf.zeros([2, num_classes], tf.float64), tf.constant(0.0, tf.float64)))

    def replica_sums(images, labels):
        probabilities = class_probabilities(model, images)
        labels = tf.cast(labels, tf.int32)
        top1, topk = top_k_hits(labels, probabilities)
        # Per class: examples and top-1 mistakes, for the worst-classes list.
        counts = tf.math.bincount(labels, minlength=num_classes, maxlength=num_classes, dtype=tf.float64)
        wrong = tf.math.bincount(labels, weights=1.0 - top1,
                                 minlength=num_classes, maxlength=num_classes, dtype=tf.float64)
        return tf.stack([counts, wrong]), tf.reduce_sum(topk)

    @tf.function
    def step(images, labels):
        per_class, topk = strategy.run(replica_step, args=(images, labels))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, per_class, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, topk, axis=None))

    per_class, topk_correct = np.zeros((2, num_classes)), 0.0
    try:
        for images, labels in dataset:
            batch_per_class, batch_topk = step(images, labels)
            per_class += batch_per_class.numpy()
            topk_correct += float(batch_topk)
    except tf.errors.DataLossError as error:  # TensorFlow's "corrupted record": name the shard
        from pipelines import audit

        raise audit.damaged_shard_error(datasets.list_files(config.eval_files), error) from None
    except tf.errors.ResourceExhaustedError as error:
        raise datasets.batch_memory_error(config.batch_size, error) from None
    count = per_class[0].sum()
    if not count:
        raise ValueError(f"No examples in {config.eval_files}.")
    with np.errstate(invalid="ignore", divide="ignore"):
        class_errors = np.where(per_class[0] > 0, per_class[1] / per_class[0], np.nan)
    # Per class, keyed by the class id (ImageNet has two "crane"s: n02012849 the bird and
    # n03126707 the machine), with the name beside it.
    ids = spec.get("class_ids") or [str(i) for i in range(num_classes)]
    names = spec.get("class_names") or list(ids)
    return {
        "top1_error": float(per_class[1].sum() / count),
        "top5_error": float(1.0 - topk_correct / count),
        "num_examples": int(count),
        "crops": config.crops,
        "checkpoint": checkpoint,
        "per_class_top1_error": {ids[i]: {"name": names[i], "top1_error": float(class_errors[i]),
                                          "num_examples": int(per_class[0][i])}
                                 for i in range(num_classes) if per_class[0][i] > 0},
    }
