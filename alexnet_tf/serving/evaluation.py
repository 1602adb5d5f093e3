"""Evaluation of a run's checkpoint, or of several runs' ensemble: the library behind
`python -m alexnet_tf.evaluate`.

Top-1 and top-5 error as the paper reports them, on the centre crop or on the paper's ten
crops (four corners, centre and their mirrors, softmax averaged), under any strategy; every
validation image counts exactly once, whatever the batch size. An ensemble (Table 2: "we
average the predictions of five similar CNNs") averages its members' softmax outputs, each
over the same crops; each member's own figures are reported beside the ensemble's.

The input is uint8 on the device; each member takes off its own mean. A forward pass sees at
most `batch_size` crops: with ten crops a batch holds `batch_size // 10` images, and the
members run one after another.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from alexnet_tf.model.metrics import class_probabilities, top_k_hits
from alexnet_tf import run_dir
from alexnet_tf.training import strategies


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    model_dir: object  # a run directory, or a sequence of them (their ensemble)
    eval_files: str
    checkpoint: str | None = None  # one run only
    crops: int = 1
    batch_size: int = 128  # crops per forward pass
    strategy: str = "auto"
    num_virtual_cpus: int = 0

    def __post_init__(self):
        dirs = (self.model_dir,) if isinstance(self.model_dir, (str, os.PathLike)) else tuple(self.model_dir)
        if not dirs:
            raise ValueError("Expected --model_dir to name at least one run.")
        if len(set(map(os.path.abspath, map(str, dirs)))) != len(dirs):
            raise ValueError(f"--model_dir names a run twice: {','.join(map(str, dirs))}")
        if len(dirs) > 1 and self.checkpoint:
            raise ValueError("--checkpoint picks one run's checkpoint; an ensemble uses each member's latest.")

    @property
    def model_dirs(self):
        return (str(self.model_dir),) if isinstance(self.model_dir, (str, os.PathLike)) else tuple(map(str, self.model_dir))


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of an evaluation: its model, model spec and checkpoint."""

    model_dir: str
    model: object
    spec: dict
    checkpoint: str


def load_members(model_dirs, *, checkpoint=None, crops=1):
    """The runs' `Member`s, checked to make one ensemble: the same classes (in the same order),
    input size, label offset and (for one crop) crop geometry. ValueError names the run that
    differs and how."""
    members = []
    for model_dir in model_dirs:
        model, spec, path = run_dir.load_model(model_dir, checkpoint)
        members.append(Member(model_dir, model, spec, path))
    first = members[0]

    def facts(member):
        network, statistics = run_dir.network_of(member.spec), run_dir.statistics_of(member.spec)
        return {"classes": network.num_classes, "class ids": tuple(member.spec.get("class_ids") or ()),
                "input size": network.image_size, "label offset": statistics.label_offset,
                **({"evaluation crop": run_dir.preprocessing_of(member.spec)} if crops == 1 else {})}

    for member in members[1:]:
        for key, value in facts(member).items():
            expected = facts(first)[key]
            if value != expected and (key != "class ids" or (value and expected)):
                shown = (lambda v: f"{len(v)} ids from {v[0]!r}" if key == "class ids" else repr(v))
                raise ValueError(f"The runs do not make an ensemble: {member.model_dir} has {key} {shown(value)}, "
                                 f"{first.model_dir} {shown(expected)}. Ensemble runs of the same data and network "
                                 "input.")
    return members


def evaluate(config):
    """Evaluates the checkpoint (or the ensemble). Returns a dict: top1_error, top5_error,
    num_examples, crops, checkpoint, per_class_top1_error ({class id: {name, top1_error,
    num_examples}}); for an ensemble also members: [{model_dir, checkpoint, top1_error,
    top5_error}], and checkpoint lists every member's."""
    strategy = strategies.create_strategy(config.strategy, num_virtual_cpus=config.num_virtual_cpus)
    with strategy.scope():
        members = load_members(config.model_dirs, checkpoint=config.checkpoint, crops=config.crops)
    spec = members[0].spec
    statistics = run_dir.statistics_of(spec)
    network = run_dir.network_of(spec)
    num_classes, image_size = network.num_classes, network.image_size
    # Images per batch: `batch_size` crops in every forward pass.
    images_per_batch = max(1, config.batch_size // config.crops)
    replicas = strategy.num_replicas_in_sync
    if images_per_batch % replicas:
        raise ValueError(f"Expected --batch_size to give each of the {replicas} replicas the same number of "
                         f"images{' (of ten crops each)' if config.crops == 10 else ''}. Received: "
                         f"{config.batch_size}; pass a multiple of {replicas * config.crops}.")
    from pipelines import dataset as datasets

    dataset = strategy.distribute_datasets_from_function(lambda context: datasets.build_eval_dataset(
        datasets.Source(config.eval_files), datasets.EvalOptions(
            batch_size=images_per_batch, image_size=image_size, crops=config.crops, statistics=statistics,
            input_context=context, output_dtype=tf.uint8,
            # Ten crops are the paper's; a single crop is the one the weights were measured with.
            preprocessing=run_dir.preprocessing_of(spec) if config.crops == 1 else "paper")))
    means = [tf.constant(run_dir.statistics_of(member.spec).rgb_mean, tf.float32) for member in members]

    def replica_step(images, labels):
        # A replica can get an empty final batch; TensorFlow's CPU conv and pooling kernels
        # return wrong shapes for empty inputs, so an empty batch skips the model.
        return tf.cond(tf.shape(images)[0] > 0, lambda: replica_sums(images, labels),
                       lambda: (tf.zeros([2, num_classes], tf.float64), tf.zeros([len(members) + 1, 2], tf.float64)))

    def replica_sums(images, labels):
        labels = tf.cast(labels, tf.int32)
        member_probabilities, hits, previous = [], [], None
        for member, mean in zip(members, means):
            # One member at a time: its activations are freed before the next one runs.
            with tf.control_dependencies([] if previous is None else [previous]):
                probabilities = class_probabilities(member.model, tf.cast(images, tf.float32) - mean)
            member_probabilities.append(probabilities)
            hits.append(tf.stack([tf.reduce_sum(hit) for hit in top_k_hits(labels, probabilities)]))
            previous = probabilities
        ensemble = tf.add_n(member_probabilities) / len(members)
        top1, topk = top_k_hits(labels, ensemble)
        hits.append(tf.stack([tf.reduce_sum(top1), tf.reduce_sum(topk)]))
        # Per class: examples and top-1 mistakes, for the worst-classes list.
        counts = tf.math.bincount(labels, minlength=num_classes, maxlength=num_classes, dtype=tf.float64)
        wrong = tf.math.bincount(labels, weights=1.0 - top1,
                                 minlength=num_classes, maxlength=num_classes, dtype=tf.float64)
        return tf.stack([counts, wrong]), tf.stack(hits)

    @tf.function
    def step(images, labels):
        per_class, hits = strategy.run(replica_step, args=(images, labels))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, per_class, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None))

    per_class, hits = np.zeros((2, num_classes)), np.zeros((len(members) + 1, 2))
    try:
        for images, labels in dataset:
            batch_per_class, batch_hits = step(images, labels)
            per_class += batch_per_class.numpy()
            hits += batch_hits.numpy()
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
    errors = 1.0 - hits / count
    results = {
        "top1_error": float(errors[-1, 0]),
        "top5_error": float(errors[-1, 1]),
        "num_examples": int(count),
        "crops": config.crops,
        "checkpoint": members[0].checkpoint if len(members) == 1 else [member.checkpoint for member in members],
        "per_class_top1_error": {ids[i]: {"name": names[i], "top1_error": float(class_errors[i]),
                                          "num_examples": int(per_class[0][i])}
                                 for i in range(num_classes) if per_class[0][i] > 0},
    }
    if len(members) > 1:
        results["members"] = [{"model_dir": member.model_dir, "checkpoint": member.checkpoint,
                               "top1_error": float(error[0]), "top5_error": float(error[1])}
                              for member, error in zip(members, errors[:-1])]
    return results
