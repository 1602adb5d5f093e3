"""Evaluation of a run's checkpoint, or of several runs' ensemble: the library behind
`python -m alexnet_tf.evaluate`.

Top-1 and top-5 error as the paper reports them, on the centre crop or on the paper's ten
crops (four corners, centre and their mirrors, softmax averaged), under any strategy; every
validation image counts exactly once, whatever the batch size. An ensemble (Table 2: "we
average the predictions of five similar CNNs") averages its members' softmax outputs, each
over the same crops; each member's own figures are reported beside the ensemble's.

The input is uint8 on the device; each member takes off its own mean. A forward pass sees at
most `batch_size` crops: with ten crops a batch holds `batch_size // 10` images, all ten
cropped from one decode. The members run one at a time, over the same batches in the same
order; members of the same network are read into one model run by one compiled step, so
memory holds one network whatever the number of members.
"""

import dataclasses
import gc
import os
import sys

import numpy as np
import tensorflow as tf
import tqdm

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
    progress: bool = True  # a bar on a terminal (a line every 30 s in a log), as the converter's

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


def _facts(model_dir, spec, crops):
    network, statistics = run_dir.network_of(spec), run_dir.statistics_of(spec)
    return {"classes": network.num_classes, "class ids": tuple(spec.get("class_ids") or ()),
            "input size": network.image_size, "label offset": statistics.label_offset,
            **({"evaluation crop": run_dir.preprocessing_of(spec)} if crops == 1 else {})}


def check_members(model_dirs, *, crops=1):
    """The runs' model specs, checked to make one ensemble: the same classes (in the same
    order), input size, label offset and (for one crop) crop geometry. ValueError names the run
    that differs and how, before any model is built."""
    specs = [run_dir.read_model_spec(model_dir) for model_dir in model_dirs]
    first = _facts(model_dirs[0], specs[0], crops)
    for model_dir, spec in zip(model_dirs[1:], specs[1:]):
        for key, value in _facts(model_dir, spec, crops).items():
            expected = first[key]
            if value != expected and (key != "class ids" or (value and expected)):
                shown = (lambda v: f"{len(v)} ids from {v[0]!r}" if key == "class ids" else repr(v))
                raise ValueError(f"The runs do not make an ensemble: {model_dir} has {key} {shown(value)}, "
                                 f"{model_dirs[0]} {shown(expected)}. Ensemble runs of the same data and network "
                                 "input.")
    return specs


def evaluate(config):
    """Evaluates the checkpoint (or the ensemble). Returns a dict: top1_error, top5_error,
    num_examples, crops, checkpoint, per_class_top1_error ({class id: {name, top1_error,
    num_examples}}); for an ensemble also members: [{model_dir, checkpoint, top1_error,
    top5_error}], and checkpoint lists every member's.

    The members are evaluated one after another over the same batches: the memory holds one
    network and, for an ensemble, the running sum of the members' probabilities ([examples,
    classes] float32: 200 MB for ImageNet's validation split)."""
    strategy = strategies.create_strategy(config.strategy, num_virtual_cpus=config.num_virtual_cpus)
    dirs = config.model_dirs
    specs = check_members(dirs, crops=config.crops)
    if len(dirs) > 1 and strategies.cluster_workers() > 1:
        raise ValueError("An ensemble is evaluated on one machine (its members' probabilities are summed "
                         "there): drop --strategy=multi_worker / TF_CONFIG, or evaluate the runs one by one.")
    num_classes = run_dir.network_of(specs[0]).num_classes
    dataset = _eval_dataset(strategy, config, specs[0])
    ensemble = len(dirs) > 1
    sums, ensemble_labels, member_results = [], [], []
    model = step = network = None
    for index, model_dir in enumerate(dirs):
        member_network = run_dir.network_of(specs[index])
        if member_network == network:
            # The same network as the last member's: its weights read into the same model,
            # run by the same compiled step (a new model and step per member would keep each
            # one's weights alive inside TensorFlow: the peak grew by a network per member).
            checkpoint = run_dir.restore_weights(model, model_dir, config.checkpoint)
        else:
            del model, step
            gc.collect()
            with strategy.scope():
                model, _, checkpoint = run_dir.load_model(model_dir, config.checkpoint)
            step, network = _make_step(strategy, model, num_classes, keep_probabilities=ensemble), member_network
        mean = tf.constant(run_dir.statistics_of(specs[index]).rgb_mean, tf.float32)
        bar = tqdm.tqdm(total=int(member_results[0][2][0].sum()) if member_results else None, unit="images",
                        desc=f"Evaluating {model_dir}" if ensemble else "Evaluating", file=sys.stderr,
                        disable=not config.progress, mininterval=0.5 if sys.stderr.isatty() else 30.0)
        with bar:
            per_class, hits, kept = _member_pass(strategy, dataset, step, mean, bar, config,
                                                 num_classes=num_classes, keep=ensemble)
        if ensemble:  # the batches come in the same order in every pass
            if index == 0:
                sums = [probabilities for probabilities, _ in kept]
                ensemble_labels = [labels for _, labels in kept]
            else:
                for total, (probabilities, _) in zip(sums, kept):
                    total += probabilities
        member_results.append((model_dir, checkpoint, per_class, hits))
    _, _, per_class, hits = member_results[0]
    if ensemble:
        per_class, hits = _ensemble_counts(np.concatenate(sums), np.concatenate(ensemble_labels), num_classes)
    return _results(config, specs[0], per_class, hits, member_results)


def _eval_dataset(strategy, config, spec):
    """The distributed evaluation batches: uint8, `config.batch_size` crops per batch."""
    from pipelines import dataset as datasets

    images_per_batch = max(1, config.batch_size // config.crops)
    replicas = strategy.num_replicas_in_sync
    if images_per_batch % replicas:
        raise ValueError(f"Expected --batch_size to give each of the {replicas} replicas the same number of "
                         f"images{' (of ten crops each)' if config.crops == 10 else ''}. Received: "
                         f"{config.batch_size}; pass a multiple of {replicas * config.crops}.")
    return strategy.distribute_datasets_from_function(lambda context: datasets.build_eval_dataset(
        datasets.Source(config.eval_files), datasets.EvalOptions(
            batch_size=images_per_batch, image_size=run_dir.network_of(spec).image_size, crops=config.crops,
            statistics=run_dir.statistics_of(spec), input_context=context, output_dtype=tf.uint8,
            # Ten crops are the paper's; a single crop is the one the weights were measured with.
            preprocessing=run_dir.preprocessing_of(spec) if config.crops == 1 else "paper")))


def _member_pass(strategy, dataset, step, mean, bar, config, *, num_classes, keep):
    """One network over every batch: (per-class counts [2, C], [top-1, top-5] hits, and with
    `keep` the batches' (probabilities, labels) of this machine's replicas)."""
    from pipelines import dataset as datasets

    per_class, hits, kept = np.zeros((2, num_classes)), np.zeros(2), []
    local = lambda value: np.concatenate([v.numpy() for v in strategy.experimental_local_results(value)])  # noqa: E731
    try:
        for images, labels in dataset:
            batch_per_class, batch_hits, probabilities, batch_labels = step(images, labels, mean)
            bar.update(int(batch_per_class.numpy()[0].sum()))
            per_class += batch_per_class.numpy()
            hits += batch_hits.numpy()
            if keep:
                kept.append((local(probabilities), local(batch_labels)))
    except tf.errors.DataLossError as error:  # TensorFlow's "corrupted record": name the shard
        from pipelines import audit

        raise audit.damaged_shard_error(datasets.list_files(config.eval_files), error) from None
    except tf.errors.ResourceExhaustedError as error:
        raise datasets.batch_memory_error(config.batch_size, error) from None
    if not per_class[0].sum():
        raise ValueError(f"No examples in {config.eval_files}.")
    return per_class, hits, kept


def _ensemble_counts(probabilities, labels, num_classes):
    """(per-class counts, hits) of the summed probabilities, counted as one network's are."""
    labels = tf.constant(labels, tf.int32)
    top1, topk = top_k_hits(labels, tf.constant(probabilities))
    per_class = np.stack([np.bincount(labels.numpy(), minlength=num_classes),
                          np.bincount(labels.numpy(), weights=1.0 - top1.numpy(), minlength=num_classes)])
    return per_class.astype(np.float64), np.array([top1.numpy().sum(), topk.numpy().sum()])


def _results(config, spec, per_class, hits, member_results):
    count = per_class[0].sum()
    num_classes = len(per_class[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        class_errors = np.where(per_class[0] > 0, per_class[1] / per_class[0], np.nan)
    # Per class, keyed by the class id (ImageNet has two "crane"s: n02012849 the bird and
    # n03126707 the machine), with the name beside it.
    ids = spec.get("class_ids") or [str(i) for i in range(num_classes)]
    names = spec.get("class_names") or list(ids)
    ensemble = len(member_results) > 1
    results = {
        "top1_error": float(1.0 - hits[0] / count),
        "top5_error": float(1.0 - hits[1] / count),
        "num_examples": int(count),
        "crops": config.crops,
        "checkpoint": [checkpoint for _, checkpoint, _, _ in member_results] if ensemble else member_results[0][1],
        "per_class_top1_error": {ids[i]: {"name": names[i], "top1_error": float(class_errors[i]),
                                          "num_examples": int(per_class[0][i])}
                                 for i in range(num_classes) if per_class[0][i] > 0},
    }
    if ensemble:
        results["members"] = [{"model_dir": model_dir, "checkpoint": checkpoint,
                               "top1_error": float(1.0 - member_hits[0] / count),
                               "top5_error": float(1.0 - member_hits[1] / count)}
                              for model_dir, checkpoint, _, member_hits in member_results]
    return results


def _make_step(strategy, model, num_classes, *, keep_probabilities):
    """The compiled step of one network, `step(images, labels, rgb_mean)`: (per-class
    [examples, top-1 mistakes] and [top-1, top-5 hits] summed over every replica and worker;
    each replica's probabilities and labels when `keep_probabilities`, else empty)."""

    def replica_step(images, labels, mean):
        # A replica can get an empty final batch; TensorFlow's CPU conv and pooling kernels
        # return wrong shapes for empty inputs, so an empty batch skips the model.
        probabilities = tf.cond(tf.shape(images)[0] > 0,
                                lambda: class_probabilities(model, tf.cast(images, tf.float32) - mean),
                                lambda: tf.zeros([0, num_classes], tf.float32))
        labels = tf.cast(labels, tf.int32)
        top1, topk = top_k_hits(labels, probabilities)
        # Per class: examples and top-1 mistakes, for the worst-classes list.
        counts = tf.math.bincount(labels, minlength=num_classes, maxlength=num_classes, dtype=tf.float64)
        wrong = tf.math.bincount(labels, weights=1.0 - top1, minlength=num_classes, maxlength=num_classes,
                                 dtype=tf.float64)
        kept = (probabilities, labels) if keep_probabilities else (tf.zeros([0]), tf.zeros([0], tf.int32))
        return (tf.stack([counts, wrong]), tf.stack([tf.reduce_sum(top1), tf.reduce_sum(topk)]), *kept)

    @tf.function
    def step(images, labels, mean):
        per_class, hits, probabilities, kept_labels = strategy.run(replica_step, args=(images, labels, mean))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, per_class, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None), probabilities, kept_labels)

    return step
