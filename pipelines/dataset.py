"""tf.data input pipelines: TFRecord shards (or a prepared TFDS dataset) to model-ready batches.

Two builders, each taking the records (`Source`) and one options value: `build_train_dataset`
(`TrainOptions`: the endless shuffled stream of random crops) and `build_eval_dataset`
(`EvalOptions`: every example once, centre or ten crops); `build_dataset` is the public front
over both. The float32 / uint8 choice is the last map of each, the TFDS / shards choice the
first.

Design (measured with `python -m pipelines.benchmarks.input_pipeline`, see WORKSPACE.md):
- Each image is decoded straight into its crop with `tf.io.decode_and_crop_jpeg` (libjpeg
  skips what lies outside the window) and stays uint8: per-image work is one decode.
- The float work happens once per batch: each image's flip and lighting alphas are drawn from
  the batch's seeds (on TensorFlow's kernels: XLA's generator gives other numbers), then one
  XLA-compiled function makes cast, mirror, lighting offset eigvec @ (alpha * eigval) and mean
  a single pass over the batch. Per-image float32 kernels
  (cast, flip, lighting, normalise separately) cost several passes over every image and
  starve the decoders on a small CPU. With `output_dtype=tf.uint8` (what training uses) that
  function runs on the device instead, inside the compiled step (`alexnet_tf.training.steps`).
- Every random draw is stateless, seeded by (seed, position of the example in the stream),
  and every epoch's file and record order by (seed, epoch): the stream from any position is
  rebuilt from the seed and that position alone, so a checkpoint records a step, not an
  iterator.
"""

import dataclasses
import os
import random

import tensorflow as tf

from pipelines import audit, augment, constants, schema
from pipelines.decoding import decode_rgb
from pipelines import preprocessing as conventions

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_SHUFFLE_BUFFER = 10_000
_RECORD_BUFFER_BYTES = 8 << 20
_MAX_INTERLEAVE = 16


@dataclasses.dataclass(frozen=True)
class DatasetStatistics:
    """What the pipeline needs to know about a dataset besides its records."""

    rgb_mean: tuple = constants.IMAGENET_RGB_MEAN
    rgb_eigval: tuple = constants.IMAGENET_RGB_EIGVAL
    rgb_eigvec: tuple = constants.IMAGENET_RGB_EIGVEC
    label_offset: int = 0
    num_classes: int | None = None
    class_names: tuple = ()
    class_ids: tuple = ()  # dataset_info.json's `classes` (synsets), index = label
    splits: dict = dataclasses.field(default_factory=dict)  # name -> num_examples
    source: str = "ImageNet constants (pipelines.constants)"


def load_statistics(data_dir):
    """Statistics from `data_dir`/dataset_info.json, else the documented ImageNet constants."""
    info = schema.read_dataset_info(data_dir) if data_dir else None
    if not info:
        return DatasetStatistics()
    has_pca = all(key in info for key in ("rgb_mean", "rgb_eigval", "rgb_eigvec"))
    defaults = DatasetStatistics()
    classes = info.get("classes", [])
    names = info.get("class_names") or []
    return DatasetStatistics(
        rgb_mean=tuple(info["rgb_mean"]) if has_pca else defaults.rgb_mean,
        rgb_eigval=tuple(info["rgb_eigval"]) if has_pca else defaults.rgb_eigval,
        rgb_eigvec=tuple(map(tuple, info["rgb_eigvec"])) if has_pca else defaults.rgb_eigvec,
        label_offset=int(info.get("label_offset", 0)),
        num_classes=len(classes) or None,
        class_names=tuple(n or c for n, c in zip(names, classes)) if names else tuple(classes),
        class_ids=tuple(classes),
        splits={name: split["num_examples"] for name, split in info.get("splits", {}).items()},
        source=os.path.join(data_dir, schema.DATASET_INFO_FILE) + ("" if has_pca else " (ImageNet colour constants)"),
    )


# ---------------------------------------------------------------------------------------
# Per-image ops (inside tf.data maps)


def decode_for_train(encoded, seed, *, image_size):
    """uint8 [S, S, 3]: the random training patch of one example (flip and lighting follow
    per batch, in `make_train_normalizer`)."""
    patch = decode_rgb(encoded, lambda h, w: augment.random_crop_window(h, w, seed=seed))
    return augment.resize_square(patch, image_size)


def decode_for_eval(encoded, *, image_size, preprocessing=conventions.PAPER):
    """uint8 [S, S, 3]: the centred 224/256 square of the shorter side, resized to S; or,
    for "caffe" or "torchvision", the crop that weight set's own pipeline makes
    (`pipelines.preprocessing`)."""
    if conventions.check_preprocessing(preprocessing) != conventions.PAPER:
        return conventions.crop_of_convention(decode_rgb(encoded, exact_dct=True), image_size=image_size,
                                              preprocessing=preprocessing)
    patch = decode_rgb(encoded, augment.center_crop_window)
    return augment.resize_square(patch, image_size)


def decode_ten_crops(encoded, *, image_size):
    """uint8 [10, S, S, 3]: the central square resized to S*256/224, then the paper's ten crops."""
    square = decode_rgb(encoded, lambda h, w: augment.center_crop_window(h, w, crop_fraction=1.0))
    resized = augment.resize_square(square, round(image_size / constants.CROP_FRACTION))
    return augment.ten_crop(resized, image_size)


# ---------------------------------------------------------------------------------------
# Per-batch ops


def make_train_normalizer(statistics, *, lighting_stddev, random_flip=True):
    """(uint8 images [B, S, S, 3], seeds [2, 2]) -> float32: flip, lighting, mean off.

    One XLA-compiled function: each image is mirrored with probability 1/2, gets its own
    lighting offset eigvec @ (alpha * eigval), alpha ~ N(0, lighting_stddev), and loses the
    mean, all in a single pass over the batch (see WORKSPACE.md for the measurements).
    """
    mean = tf.constant(statistics.rgb_mean, tf.float32)
    eigval = tf.constant(statistics.rgb_eigval, tf.float32)
    eigvec = tf.constant(statistics.rgb_eigvec, tf.float32)

    @tf.function(jit_compile=True)
    def apply(images, flips, alphas):
        # XLA fuses flip, cast, mean and lighting into one pass over the batch.
        return augment.apply_flip_light_centre(images, flips, alphas, rgb_mean=mean, eigval=eigval, eigvec=eigvec)

    def normalize(images, seeds):
        # The draws on TensorFlow's kernels, as the training step's (XLA draws other numbers).
        flips, alphas = augment.draw_flips_and_alphas(tf.shape(images)[0], seeds, lighting_stddev, random_flip)
        return apply(images, flips, alphas)

    return normalize


def make_eval_normalizer(statistics):
    """uint8 images [..., 3] -> float32, mean subtracted (one XLA-fused pass)."""
    mean = tf.constant(statistics.rgb_mean, tf.float32)

    @tf.function(jit_compile=True)
    def normalize(images):
        return tf.cast(images, tf.float32) - mean

    return normalize


# ---------------------------------------------------------------------------------------
# Sources


def list_files(file_pattern):
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({path for pattern in patterns for path in tf.io.gfile.glob(pattern)})
    if not files:
        raise ValueError(
            f"No files match {file_pattern!r}. Expected TFRecord shards such as "
            "DATA_DIR/train-00000-of-01024 (convert images with `python -m pipelines.convert`).")
    return files


def _shard_files(files, input_context):
    if input_context is None or input_context.num_input_pipelines == 1:
        return files
    count = input_context.num_input_pipelines
    if len(files) < count:
        raise ValueError(
            f"Expected at least one file per input pipeline: {count} workers read "
            f"{len(files)} files. Convert with more shards (--num_shards >= {count}) or use "
            "fewer workers.")
    return files[input_context.input_pipeline_id::count]


def _indexed_records(skip):
    """path -> (record index, record) of that shard, without the records `skip` ({path:
    record indices}, from `pipelines.audit`) names."""
    table = None
    if skip:
        keys = [f"{path}#{index}" for path, indices in sorted(skip.items()) for index in sorted(indices)]
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, [True] * len(keys)), False)

    def records(path):
        indexed = tf.data.TFRecordDataset(path, buffer_size=_RECORD_BUFFER_BYTES).enumerate()
        if table is None:
            return indexed
        return indexed.filter(lambda index, _: tf.logical_not(table.lookup(
            tf.strings.join([path, "#", tf.strings.as_string(index)]))))

    return records


def _skipping(skip):
    """path -> that shard's records without the ones `skip` names."""
    indexed = _indexed_records(skip)
    if not skip:
        return lambda path: tf.data.TFRecordDataset(path, buffer_size=_RECORD_BUFFER_BYTES)
    return lambda path: indexed(path).map(lambda _, record: record)


def _parse_tfrecord(serialized):
    """(encoded image, int64 label) of one record of the dataset schema."""
    features = tf.io.parse_single_example(serialized, schema.training_feature_spec())
    return features[schema.IMAGE_ENCODED], features[schema.CLASS_LABEL]


def _interleaved(paths, num_files, records_of):
    """The records of a dataset of shard paths, read several files at a time in a fixed order."""
    return paths.interleave(records_of, cycle_length=min(num_files, _MAX_INTERLEAVE), num_parallel_calls=AUTOTUNE,
                            deterministic=True)


def tfrecord_records(file_pattern, *, input_context=None, max_bad_fraction=audit.DEFAULT_MAX_BAD_FRACTION):
    """(records, parse) of shards in file order, sharded by file per worker, without the
    records `pipelines.audit` found undecodable (ShardError for shards it refuses)."""
    files = _shard_files(list_files(file_pattern), input_context)
    records_of = _skipping(audit.audit_files(files, max_bad_fraction=max_bad_fraction))
    return _interleaved(tf.data.Dataset.from_tensor_slices(files), len(files), records_of), _parse_tfrecord


def _mix(seed, epoch, stream):
    """A distinct int64 seed per (run seed, epoch, stream): shuffles that are a function of
    the epoch, so any epoch can be rebuilt without the iterator that reached it."""
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64) * 4 + stream


def _op_seeds_only():
    """Inside a dataset function, lets `Dataset.shuffle` take a tensor seed: TF 2.21 combines
    it with the graph's global seed by a Python comparison that fails when that seed is 0.
    The op seeds alone decide in this function's own graph."""
    if not tf.executing_eagerly():
        tf.compat.v1.get_default_graph().seed = None


def tfrecord_epochs(file_pattern, *, seed, input_context=None, max_bad_fraction=audit.DEFAULT_MAX_BAD_FRACTION):
    """(epoch -> that epoch's records, records per epoch, parse) for training from shards:
    this worker's files in an order drawn from (seed, epoch), interleaved."""
    files = _shard_files(list_files(file_pattern), input_context)
    skip = audit.audit_files(files, max_bad_fraction=max_bad_fraction)
    records_of = _skipping(skip)
    per_epoch = sum(audit.audit_shard(path).records for path in files) - sum(len(v) for v in skip.values())

    def epoch_records(epoch):
        order = tf.data.Dataset.from_tensor_slices(files).shuffle(
            len(files), seed=_mix(seed, epoch, 1), reshuffle_each_iteration=False)
        return _interleaved(order, len(files), records_of)

    return epoch_records, per_epoch, _parse_tfrecord


def tfds_epochs(name, *, split, data_dir, input_context=None):
    """(epoch -> that epoch's records, records per epoch, parse) for training from TFDS: the
    worker's share in TFDS's file order (the record shuffle draws per epoch)."""
    dataset, parse = tfds_records(name, split=split, data_dir=data_dir, input_context=input_context)
    per_epoch = int(dataset.cardinality())
    if per_epoch < 0:  # unknown: count this worker's share once
        per_epoch = int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))
    return (lambda epoch: dataset), per_epoch, parse


def tfds_records(name, *, split, data_dir, input_context=None):
    """(encoded image, int64 label) pairs from a prepared TFDS dataset in its file order,
    images left encoded."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    read_config = tfds.ReadConfig(input_context=input_context, interleave_cycle_length=_MAX_INTERLEAVE)
    dataset = builder.as_dataset(
        split=split, shuffle_files=False, read_config=read_config,
        # Keep the JPEG bytes: the pipeline decodes each image once, into its crop.
        decoders={"image": tfds.decode.SkipDecoding()},
    )

    def parse(example):
        return example["image"], tf.cast(example["label"], tf.int64)

    return dataset, parse


# ---------------------------------------------------------------------------------------
# Pipelines


# The largest batch any command takes (--batch_size's upper bound): 65,536 images of 224 px are
# 39 GB of float32 already, and tf.data reserves room for a batch's elements up front.
MAX_BATCH_SIZE = 65536


def _positive_batch(batch_size):
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"Expected 1 <= --batch_size <= {MAX_BATCH_SIZE}. Received: {batch_size}")


def batch_memory_error(batch_size, error):
    """The ValueError to raise for TensorFlow's ResourceExhaustedError while reading batches:
    a batch that does not fit in memory is a flag to lower, not a crash."""
    return ValueError(f"A batch of --batch_size={batch_size} does not fit in this machine's memory "
                      f"({error.message.splitlines()[0][:200]}): pass a smaller --batch_size.")


def _ready_dtype(output_dtype):
    output_dtype = tf.as_dtype(output_dtype)
    if output_dtype not in (tf.float32, tf.uint8):
        raise ValueError(f"Expected output_dtype tf.float32 or tf.uint8. Received: {output_dtype.name}")
    return output_dtype


@dataclasses.dataclass(frozen=True)
class Source:
    """The records a dataset reads: the TFRecord shards `file_pattern` matches (a glob or a
    list of globs), or with `tfds_name` the prepared TFDS dataset whose data_dir is
    `file_pattern` (split `tfds_split`, default "train" / "validation")."""

    file_pattern: object
    tfds_name: str | None = None
    tfds_split: str | None = None

    def statistics(self, given=None):
        """`given`, else dataset_info.json's beside the shards (ImageNet's for TFDS)."""
        if given is not None:
            return given
        if self.tfds_name:
            return DatasetStatistics()
        first = self.file_pattern if isinstance(self.file_pattern, str) else list(self.file_pattern)[0]
        return load_statistics(os.path.dirname(first))


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How `build_train_dataset` reads, augments and batches (`build_dataset` documents each)."""

    batch_size: int
    image_size: int = 224
    seed: int | None = None
    statistics: DatasetStatistics | None = None
    label_offset: int | None = None
    input_context: tf.distribute.InputContext | None = None
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    lighting_stddev: float = constants.PCA_LIGHTING_STDDEV
    random_crop: bool = True  # False: the centre crop (the ablation)
    random_flip: bool = True  # (float32 output; uint8 crops are flipped on the device)
    data_service: str | None = None
    data_service_job: str = "alexnet_train"
    max_bad_fraction: float = audit.DEFAULT_MAX_BAD_FRACTION
    output_dtype: tf.DType = tf.float32
    start_example: int = 0
    examples_per_epoch: int | None = None

    def __post_init__(self):
        _positive_batch(self.batch_size)
        object.__setattr__(self, "output_dtype", _ready_dtype(self.output_dtype))
        if self.seed is None:  # one draw per pipeline: its crops, flips and order agree
            object.__setattr__(self, "seed", random.SystemRandom().randrange(2**31))


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How `build_eval_dataset` crops and batches (`build_dataset` documents each)."""

    batch_size: int
    image_size: int = 224
    crops: int = 1
    preprocessing: str = conventions.PAPER
    statistics: DatasetStatistics | None = None
    label_offset: int | None = None
    input_context: tf.distribute.InputContext | None = None
    max_bad_fraction: float = audit.DEFAULT_MAX_BAD_FRACTION
    output_dtype: tf.DType = tf.float32

    def __post_init__(self):
        _positive_batch(self.batch_size)
        object.__setattr__(self, "output_dtype", _ready_dtype(self.output_dtype))
        if self.crops not in (1, 10):
            raise ValueError(f"Expected crops to be 1 or 10. Received: crops={self.crops}")
        if conventions.check_preprocessing(self.preprocessing) != conventions.PAPER and self.crops != 1:
            raise ValueError(f"preprocessing={self.preprocessing!r} is a single-crop evaluation geometry; "
                             "ten-crop batches use the paper's.")


def _labels(statistics, label_offset):
    """stored label -> int32 class index (minus the offset, default the statistics')."""
    offset = statistics.label_offset if label_offset is None else label_offset
    return lambda label: tf.cast(label - offset, tf.int32)


def _replica_batch(options):
    if options.input_context is None:
        return options.batch_size
    return options.input_context.get_per_replica_batch_size(options.batch_size)


def _finish(dataset):
    """The dataset as every builder returns it: sharded by file already (no auto-sharding on
    top of it), prefetched."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(AUTOTUNE)


def _train_records(source, options):
    """(epoch -> that epoch's records, records per epoch, parse) of a training source."""
    if source.tfds_name:
        return tfds_epochs(source.tfds_name, split=source.tfds_split or "train", data_dir=source.file_pattern,
                           input_context=options.input_context)
    return tfrecord_epochs(source.file_pattern, seed=options.seed, input_context=options.input_context,
                           max_bad_fraction=options.max_bad_fraction)


def _shuffled_stream(epoch_records, epoch_size, options):
    """(stream position, record) from `options.start_example` on, endless: each epoch's records
    shuffled by (seed, epoch), the position epoch << 32 | index in the epoch."""
    seed = options.seed

    def epoch_stream(epoch):
        _op_seeds_only()
        # Shuffled within the epoch: every epoch sees each (used) example exactly once.
        shuffled = epoch_records(epoch).shuffle(options.shuffle_buffer, seed=_mix(seed, epoch, 2),
                                                reshuffle_each_iteration=False)
        return shuffled.take(epoch_size).enumerate(start=tf.cast(epoch, tf.int64) * (1 << 32))

    first_epoch, into_epoch = divmod(int(options.start_example), epoch_size)
    # Every epoch is built inside the dataset function (one seeding path for all of them).
    return tf.data.Dataset.range(first_epoch, 1 << 40).flat_map(epoch_stream).skip(into_epoch)


def build_train_dataset(source, options):
    """The endless training stream of `source` (a `Source`): batches of `(images, labels int32
    [B])`, random crops in float32 flipped, lit and centred, or with `options.output_dtype`
    uint8 the crops alone. `options` is a `TrainOptions`; `build_dataset` documents each."""
    epoch_records, per_epoch, parse = _train_records(source, options)
    if per_epoch < 1:
        raise ValueError(f"No training records in {source.file_pattern!r} for this input pipeline.")
    statistics, seed = source.statistics(options.statistics), options.seed
    label_of = _labels(statistics, options.label_offset)
    epoch_size = min(options.examples_per_epoch or per_epoch, per_epoch)

    def train_example(index, record):
        encoded, label = parse(record)
        if not options.random_crop:
            return index, decode_for_eval(encoded, image_size=options.image_size), label_of(label)
        crop_seed = tf.stack([tf.cast(seed, tf.int64), index])
        return index, decode_for_train(encoded, crop_seed, image_size=options.image_size), label_of(label)

    # No ignore_errors: the audit removed what does not parse or decode, so an error here
    # fails the run instead of silently thinning (or, for a bad shard, starving) it.
    dataset = _shuffled_stream(epoch_records, epoch_size, options).map(
        train_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(_replica_batch(options), drop_remainder=True)
    if options.output_dtype == tf.float32:
        normalize_images = make_train_normalizer(statistics, lighting_stddev=options.lighting_stddev,
                                                 random_flip=options.random_flip)

        def ready(indices, images, labels):
            # Seeds of the batch's flips and alphas: its first example's stream position, in
            # streams (seed + 1, seed + 2) apart from the crops' (seed).
            first = indices[0]
            seeds = tf.stack([tf.stack([tf.cast(seed, tf.int64) + 1, first]),
                              tf.stack([tf.cast(seed, tf.int64) + 2, first])])
            return normalize_images(images, seeds), labels
    else:  # uint8: the crops as decoded, without their stream positions
        ready = lambda indices, images, labels: (images, labels)  # noqa: E731
    dataset = dataset.map(ready, num_parallel_calls=AUTOTUNE, deterministic=True)
    if options.data_service:
        dataset = dataset.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=options.data_service, job_name=options.data_service_job))
    return _finish(dataset)


def build_eval_dataset(source, options):
    """Every example of `source` (a `Source`) once, in file order: batches of `(images, labels
    int32 [B])`, the last possibly smaller; a centre crop (or `options.preprocessing`'s) or
    the ten crops [B, 10, S, S, 3], centred float32 or with `options.output_dtype` uint8.
    `options` is an `EvalOptions`; `build_dataset` documents each."""
    if source.tfds_name:
        records, parse = tfds_records(source.tfds_name, split=source.tfds_split or "validation",
                                      data_dir=source.file_pattern, input_context=options.input_context)
    else:
        records, parse = tfrecord_records(source.file_pattern, input_context=options.input_context,
                                          max_bad_fraction=options.max_bad_fraction)
    statistics = source.statistics(options.statistics)
    label_of = _labels(statistics, options.label_offset)

    def eval_example(record):
        encoded, label = parse(record)
        if options.crops == 10:
            return decode_ten_crops(encoded, image_size=options.image_size), label_of(label)
        return (decode_for_eval(encoded, image_size=options.image_size, preprocessing=options.preprocessing),
                label_of(label))

    dataset = records.map(eval_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(_replica_batch(options), drop_remainder=False)
    if options.output_dtype == tf.float32:
        normalize_images = make_eval_normalizer(statistics)
        dataset = dataset.map(lambda images, labels: (normalize_images(images), labels),
                              num_parallel_calls=AUTOTUNE, deterministic=True)
    return _finish(dataset)


def build_dataset(
    file_pattern,
    *,
    training,
    batch_size,
    image_size=224,
    crops=1,
    seed=None,
    statistics=None,
    label_offset=None,
    input_context=None,
    shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
    lighting_stddev=constants.PCA_LIGHTING_STDDEV,
    random_crop=True,
    random_flip=True,
    tfds_name=None,
    tfds_split=None,
    data_service=None,
    data_service_job="alexnet_train",
    preprocessing=conventions.PAPER,
    max_bad_fraction=audit.DEFAULT_MAX_BAD_FRACTION,
    output_dtype=tf.float32,
    start_example=0,
    examples_per_epoch=None,
):
    """Batches of `(images float32 [B, S, S, 3], labels int32 [B])`, mean subtracted; or,
    with `output_dtype=tf.uint8`, the uint8 crops before flip, lighting and mean.

    The public front of `build_train_dataset` (training=True) and `build_eval_dataset`
    (training=False): the keywords of the other one are ignored.

    Args:
      file_pattern: glob(s) of TFRecord shards; or, with `tfds_name`, the TFDS data_dir.
      training: random crop inside the central square, flip, PCA lighting, shuffling, an
        endless stream and `drop_remainder=True`; else deterministic centre crops, every
        example once, the last batch possibly smaller.
      batch_size: the global batch; with `input_context`, split across replicas.
      image_size: S.
      crops: 1, or 10 for evaluation with the paper's ten crops (images [B, 10, S, S, 3]).
      seed: makes the training stream reproducible (None: a random seed).
      statistics: a `DatasetStatistics`; default: `load_statistics` of the shards' folder.
      label_offset: subtracted from stored labels (1 for the TensorFlow ImageNet tools'
        records); default: the statistics' (dataset_info.json's) value.
      input_context: a `tf.distribute.InputContext` (from `distribute_datasets_from_function`).
      shuffle_buffer: examples in the shuffle buffer.
      lighting_stddev: stddev of the paper's lighting alphas (0 disables).
      random_crop: training only: False takes the centre crop (the paper's ablation).
      random_flip: training only, float32 output: False mirrors nothing.
      tfds_name: read this prepared TFDS dataset (e.g. "imagenet2012") instead of shards.
      tfds_split: its split (default "train" / "validation").
      data_service: "grpc://HOST:PORT" of a tf.data service dispatcher: the training
        pipeline then runs on the service's workers, each file of an epoch read by exactly
        one of them (dynamic sharding), and this process only receives batches. Its
        position cannot be checkpointed. Evaluation always runs locally.
      data_service_job: the service job name; consumers with the same name share one
        stream (so several training workers split it).
      preprocessing: the evaluation crop (single-crop only): "paper", or the "caffe" or
        "torchvision" geometry that imported weights were measured with.
      max_bad_fraction: of the records, how many undecodable images `pipelines.audit` may
        find in shards not written by pipelines.convert (they are skipped) before it refuses.
      output_dtype: tf.float32 (batches ready to use), or tf.uint8: training yields the
        random crops, not yet flipped, lit or centred, and evaluation its crops without the
        mean, for a consumer that does the rest on its accelerator (a quarter of the bytes
        to move, and no float work on the host). The augmentation's seeds are then the
        consumer's (`augment.random_flip` and `augment.pca_lighting` take them).
      start_example: training only: where this pipeline's stream starts, in examples of it
        (a resume passes step x this worker's batch). Every epoch's file and record order
        is drawn from (seed, epoch), so the stream from any position is rebuilt exactly,
        reading (not decoding) the records of that epoch before it: no iterator state.
      examples_per_epoch: training only: examples of each epoch's shuffled records to use
        (a run's steps_per_epoch x batch, so that its epochs are the data's); default, all.

    Raises:
      ValueError: a keyword out of range, or ten crops or another preprocessing for training.
      pipelines.audit.ShardError: a record that cannot be parsed, or too many undecodable
        images (the shard, record and reason named).

    Returns:
      A `tf.data.Dataset`.
    """
    given = dict(locals())  # the keywords, each an options field, the source or `training`
    source = Source(file_pattern, tfds_name=tfds_name, tfds_split=tfds_split)

    def options(options_class):  # the keywords that are this builder's options
        return options_class(**{field.name: given[field.name] for field in dataclasses.fields(options_class)})

    if not training:
        return build_eval_dataset(source, options(EvalOptions))
    if crops != 1:
        raise ValueError("Ten-crop batches are for evaluation: pass training=False with crops=10.")
    if conventions.check_preprocessing(preprocessing) != conventions.PAPER:
        raise ValueError(f"preprocessing={preprocessing!r} is a single-crop evaluation geometry; training and "
                         "ten-crop batches use the paper's.")
    return build_train_dataset(source, options(TrainOptions))


def build_indexed_dataset(file_pattern, *, batch_size, image_size=224, statistics=None,
                          preprocessing=conventions.PAPER, max_bad_fraction=audit.DEFAULT_MAX_BAD_FRACTION):
    """Every example once, in file order, centre-cropped as for evaluation, with its origin.

    For tools that must find an example again (nearest neighbours): the shards are read one
    after another, so `(file index, record index)` names each example's place.

    Returns:
      (files, dataset): the sorted shard paths, and batches of `(images float32 [B, S, S, 3],
      labels int32 [B], file_indices int64 [B], record_indices int64 [B], filenames [B])`.
    """
    _positive_batch(batch_size)
    files = list_files(file_pattern)
    skip = audit.audit_files(files, max_bad_fraction=max_bad_fraction)
    statistics = statistics or load_statistics(os.path.dirname(files[0]))
    spec = {key: schema.feature_spec()[key] for key in (schema.IMAGE_ENCODED, schema.CLASS_LABEL, schema.IMAGE_FILENAME)}

    indexed = _indexed_records(skip)

    def records_of(file_index, path):
        # Without the audit's undecodable records; the others keep their index.
        return indexed(path).map(lambda record_index, record: (file_index, record_index, record))

    def example(file_index, record_index, record):
        features = tf.io.parse_single_example(record, spec)
        label = tf.cast(features[schema.CLASS_LABEL] - statistics.label_offset, tf.int32)
        return (decode_for_eval(features[schema.IMAGE_ENCODED], image_size=image_size, preprocessing=preprocessing),
                label, file_index,
                record_index, features[schema.IMAGE_FILENAME])

    normalize_images = make_eval_normalizer(statistics)
    dataset = (tf.data.Dataset.from_tensor_slices(files).enumerate().flat_map(records_of)
               .map(example, num_parallel_calls=AUTOTUNE, deterministic=True)
               .batch(batch_size)
               .map(lambda images, *rest: (normalize_images(images), *rest), num_parallel_calls=AUTOTUNE))
    return files, dataset.prefetch(AUTOTUNE)


def read_example(path, record_index):
    """(encoded image bytes, stored label) of record `record_index` of the shard `path`."""
    spec = {key: schema.feature_spec()[key] for key in (schema.IMAGE_ENCODED, schema.CLASS_LABEL)}
    for record in tf.data.TFRecordDataset(path).skip(record_index).take(1):
        features = tf.io.parse_single_example(record, spec)
        return features[schema.IMAGE_ENCODED].numpy(), int(features[schema.CLASS_LABEL])
    raise IndexError(f"{path} has no record {record_index}.")
