r"""Input pipeline speed: the full training pipeline against bare parallel decoding, one run.

    python -m pipelines.benchmarks.input_pipeline --file_pattern='data/imagenet/train-*' [--batch_size=128]
    python -m pipelines.benchmarks.input_pipeline   # generates ImageNet-sized shards in a scratch folder

Prints images/s of
  bare:  read + parse + `decode_and_crop_jpeg` of a 224/256 window, parallel map, batch;
  full:  `pipelines.build_dataset(training=True)`: shuffle, random crop, flip, PCA
         lighting, mean subtraction, float32 batches;
and full / bare (goal >= 0.8: the augmentation is free next to decoding).
"""

import os
import time

from absl import app
from absl import flags

_FILE_PATTERN = flags.DEFINE_string("file_pattern", None, "Training shards; default: generated.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Images per batch.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Crop side S.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 40, "Timed batches (after warm-up).")
_WARMUP_BATCHES = flags.DEFINE_integer("warmup_batches", 5, "Untimed batches first.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds of bare and full; the best of each counts.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 2000, "Images to generate without --file_pattern.")


def _images_per_second(dataset, *, batch_size, num_batches, warmup_batches):
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        images, _ = next(iterator)
    images.numpy()
    return num_batches * batch_size / (time.perf_counter() - start)


def bare_dataset(file_pattern, *, batch_size, image_size):
    """Read, parse and decode_and_crop_jpeg only: the rate the full pipeline aims at."""
    import tensorflow as tf

    from pipelines import augment, schema

    files = sorted(tf.io.gfile.glob(file_pattern))
    dataset = tf.data.Dataset.from_tensor_slices(files).repeat().interleave(
        tf.data.TFRecordDataset, cycle_length=min(16, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE)
    spec = schema.training_feature_spec()

    def decode(serialized):
        features = tf.io.parse_single_example(serialized, spec)
        encoded = features[schema.IMAGE_ENCODED]
        shape = tf.io.extract_jpeg_shape(encoded)
        window = augment.center_crop_window(shape[0], shape[1])
        image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
        return augment.resize_square(image, image_size), features[schema.CLASS_LABEL]

    return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(
        batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def main(argv):
    del argv
    from pipelines import dataset as datasets

    from pipelines import synthetic

    generate = lambda scratch: synthetic.write_converted_dataset(scratch, num_images=_NUM_IMAGES.value)  # noqa: E731
    with synthetic.given_or_generated(_FILE_PATTERN.value, generate, prefix="input_benchmark_") as file_pattern:
        kwargs = dict(batch_size=_BATCH_SIZE.value, num_batches=_NUM_BATCHES.value,
                      warmup_batches=_WARMUP_BATCHES.value)
        bare_rates, full_rates = [], []
        for _ in range(_ROUNDS.value):
            bare_rates.append(_images_per_second(bare_dataset(
                file_pattern, batch_size=_BATCH_SIZE.value, image_size=_IMAGE_SIZE.value), **kwargs))
            full_rates.append(_images_per_second(datasets.build_dataset(
                file_pattern, training=True, batch_size=_BATCH_SIZE.value,
                image_size=_IMAGE_SIZE.value, seed=0), **kwargs))
    bare, full = max(bare_rates), max(full_rates)
    print(f"shards: {file_pattern}; batch {_BATCH_SIZE.value}, {_IMAGE_SIZE.value}px, "
          f"{_NUM_BATCHES.value} batches x {_ROUNDS.value} rounds; {os.cpu_count()} CPU cores")
    print(f"bare parallel decode_and_crop_jpeg: {bare:8.1f} images/s  (rounds: "
          + ", ".join(f"{r:.0f}" for r in bare_rates) + ")")
    print(f"full training pipeline:             {full:8.1f} images/s  (rounds: "
          + ", ".join(f"{r:.0f}" for r in full_rates) + ")")
    print(f"ratio full / bare: {full / bare:.2f} (goal >= 0.8)")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
