"""The training run's data: a `TrainConfig`'s source (shards, TFDS, synthetic) resolved to
per-worker datasets, class count, steps per epoch and dataset statistics."""

import dataclasses
import logging
import os

import tensorflow as tf

from alexnet_tf.training.config import TrainingError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What the loop needs of its data.

    `statistics` are the data's own (mean, PCA, classes); the datasets take the statistics
    to use, since weights made elsewhere keep the input mean they were trained with
    (`training.start`).
    """

    make_train: object  # (input_context, statistics) -> tf.data.Dataset
    make_eval: object  # (input_context, statistics) -> tf.data.Dataset, or None
    num_classes: int
    steps_per_epoch: int
    num_eval_examples: int | None
    statistics: object
    class_names: tuple
    shard_patterns: tuple = ()  # the TFRecord globs read (to name a damaged shard)

    @property
    def has_eval(self):
        return self.make_eval is not None

    def train_dataset(self, input_context=None, statistics=None, **position):
        """This input pipeline's endless training stream (a `tf.distribute.InputContext`
        says which share); `statistics` default to the data's; `position`: `TrainOptions`'
        `start_example` and `examples_per_epoch`."""
        return self.make_train(input_context, statistics or self.statistics, **position)

    def eval_dataset(self, input_context=None, statistics=None):
        """This input pipeline's share of the validation split, every example once."""
        return self.make_eval(input_context, statistics or self.statistics)


def _audit(train_pattern, eval_pattern, max_bad_fraction):
    """Audits the shards before anything is built (`pipelines.audit`): a shard that does not
    parse, or too many undecodable images, stops the run here, naming them."""
    from pipelines import audit
    from pipelines import dataset as datasets

    for pattern in (train_pattern, eval_pattern):
        if pattern:
            try:
                audit.audit_files(datasets.list_files(pattern), max_bad_fraction=max_bad_fraction)
            except ValueError as error:  # ShardError, or no files match
                raise TrainingError(str(error)) from None


def damaged_data_error(data, error):
    """The TrainingError for TensorFlow's DataLossError while reading `data`: the damaged
    shard(s) named, with the fix."""
    from pipelines import audit
    from pipelines import dataset as datasets

    files = [path for pattern in data.shard_patterns for path in datasets.list_files(pattern)]
    return TrainingError(f"{audit.damaged_shard_error(files, error)} The run's last good state is kept.")


def resolve_data(config):
    """The `TrainingData` of `config`'s source."""
    from pipelines import dataset as datasets
    from pipelines import schema

    if config.synthetic:
        num_classes = config.num_classes or 1000
        steps = config.steps_per_epoch or 100

        def synthetic(input_context, statistics, **position):
            del statistics, position  # uint8 crops, as the shards give them; every batch alike
            batch = input_context.get_per_replica_batch_size(config.batch_size) if input_context else config.batch_size
            images = tf.cast(tf.random.stateless_uniform([batch, config.image_size, config.image_size, 3],
                                                         seed=(config.seed, 0), maxval=256, dtype=tf.int32), tf.uint8)
            labels = tf.random.stateless_uniform([batch], seed=(config.seed, 1), maxval=num_classes,
                                                 dtype=tf.int32)
            return tf.data.Dataset.from_tensors((images, labels)).repeat()

        return TrainingData(synthetic, None, num_classes, steps, None, datasets.DatasetStatistics(), ())

    if config.tfds_name:
        import tensorflow_datasets as tfds

        builder = tfds.builder(config.tfds_name, data_dir=config.tfds_data_dir)
        num_classes = config.num_classes or builder.info.features["label"].num_classes
        train_examples = builder.info.splits["train"].num_examples
        eval_examples = builder.info.splits["validation"].num_examples
        statistics = datasets.DatasetStatistics(num_classes=num_classes)
        train_source = datasets.Source(config.tfds_data_dir, tfds_name=config.tfds_name)
        eval_source = train_source
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
        _audit(train_pattern, eval_pattern, config.max_bad_fraction)
        train_source, eval_source = datasets.Source(train_pattern), eval_pattern and datasets.Source(eval_pattern)
    steps = config.steps_per_epoch or (train_examples or 0) // config.batch_size
    if steps < 1:
        raise TrainingError(
            f"Cannot tell the steps per epoch: {train_examples} training examples for a batch of "
            f"{config.batch_size}. Pass --steps_per_epoch, or a smaller --batch_size.")

    # uint8 crops: flip, lighting and mean happen on the device (training.steps).
    common = dict(batch_size=config.batch_size, image_size=config.image_size, max_bad_fraction=config.max_bad_fraction,
                  output_dtype=tf.uint8)

    def make_train(input_context, statistics, **position):
        return datasets.build_train_dataset(train_source, datasets.TrainOptions(
            seed=config.seed, statistics=statistics, input_context=input_context, shuffle_buffer=config.shuffle_buffer,
            random_crop=config.random_crop,
            data_service=config.tf_data_service, **common, **position))

    def make_eval(input_context, statistics):
        return datasets.build_eval_dataset(eval_source, datasets.EvalOptions(
            statistics=statistics, input_context=input_context, **common))

    patterns = () if config.tfds_name else tuple(p for p in (train_pattern, eval_pattern) if p)
    return TrainingData(make_train, make_eval if eval_source else None, num_classes, steps, eval_examples,
                        statistics, statistics.class_names, shard_patterns=patterns)
