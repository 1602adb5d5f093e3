r"""Input pipeline speed: the full training pipeline against bare parallel decoding, one run.

    python -m pipelines.benchmarks.input_pipeline --file_pattern='data/imagenet/train-*' [--batch_size=128]
    python -m pipelines.benchmarks.input_pipeline   # generates ImageNet-sized shards in a scratch folder

Prints images/s of
  bare:  read + parse + `decode_and_crop_jpeg` of a 224/256 window, parallel map, uint8 batches;
  uint8: `pipelines.build_dataset(training=True, output_dtype=tf.uint8)`: shuffle, random
         crop, uint8 batches (flip, lighting and mean left to the accelerator);
  full:  `pipelines.build_dataset(training=True)`: the same plus flip, PCA lighting and mean
         subtraction on the host, float32 batches;
each the median of --rounds interleaved rounds, and uint8 / bare (goal >= 0.9) and
full / bare (goal >= 0.8: the augmentation is nearly free next to decoding).
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
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds of bare, uint8 and full; the median of each counts.")
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
    import numpy as np
    import tensorflow as tf

    from pipelines import dataset as datasets

    from pipelines import synthetic

    generate = lambda scratch: synthetic.write_converted_dataset(scratch, num_images=_NUM_IMAGES.value)  # noqa: E731
    with synthetic.given_or_generated(_FILE_PATTERN.value, generate, prefix="input_benchmark_") as file_pattern:
        kwargs = dict(batch_size=_BATCH_SIZE.value, num_batches=_NUM_BATCHES.value,
                      warmup_batches=_WARMUP_BATCHES.value)
        common = dict(training=True, batch_size=_BATCH_SIZE.value, image_size=_IMAGE_SIZE.value, seed=0)
        variants = {
            "bare parallel decode_and_crop_jpeg": lambda: bare_dataset(
                file_pattern, batch_size=_BATCH_SIZE.value, image_size=_IMAGE_SIZE.value),
            "uint8 training pipeline": lambda: datasets.build_dataset(file_pattern, output_dtype=tf.uint8, **common),
            "full training pipeline (float32)": lambda: datasets.build_dataset(file_pattern, **common),
        }
        rates = {name: [] for name in variants}
        for _ in range(_ROUNDS.value):
            for name, make in variants.items():
                rates[name].append(_images_per_second(make(), **kwargs))
    median = {name: float(np.median(values)) for name, values in rates.items()}
    print(f"shards: {file_pattern}; batch {_BATCH_SIZE.value}, {_IMAGE_SIZE.value}px, "
          f"{_NUM_BATCHES.value} batches x {_ROUNDS.value} rounds (median); {os.cpu_count()} CPU cores")
    for name, values in rates.items():
        print(f"{name + ':':38s} {median[name]:8.1f} images/s  (rounds: "
              + ", ".join(f"{r:.0f}" for r in values) + ")")
    bare, uint8, full = median.values()
    print(f"ratio uint8 / bare: {uint8 / bare:.2f} (goal >= 0.9); full / bare: {full / bare:.2f} (goal >= 0.8)")
    print(f"per core: {uint8 / os.cpu_count():.0f} images/s (uint8 pipeline)")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
