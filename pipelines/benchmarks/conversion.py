r"""Conversion speed against the bare image work on the same files, in one run.

    python -m pipelines.benchmarks.conversion [--input_dir=DIR] [--num_images=2000]

Without --input_dir it first writes ImageNet-sized procedural JPEGs (about 500x375, as the
average ImageNet photo) to a scratch folder. It then prints, for the same files:
  bare:      one process, read + decode + resize to 256 + JPEG encode (no TFRecords);
  convert:   `pipelines.convert` with --workers=1 and --workers=2 (process start included);
and the ratios convert(1)/bare (goal >= 0.8) and convert(2)/convert(1) (goal >= 1.8).
"""

import os
import shutil
import tempfile
import time

from absl import app
from absl import flags

from pipelines import conversion, synthetic

_INPUT_DIR = flags.DEFINE_string("input_dir", None, "Class-folder tree of images; default: generated.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 2000, "Images to generate when --input_dir is not given.")
_RESIZE_SHORTER = flags.DEFINE_integer("resize_shorter", 256, "As pipelines.convert.")
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "Worker counts to measure.")


def _generate(root, num_images):
    num_classes = 10
    synthetic.write_image_folder(root, num_classes=num_classes,
                                 images_per_class=max(1, num_images // num_classes),
                                 min_size=333, max_size=500, seed=0)


def measure_bare(input_dir, resize_shorter):
    """Images/s of read + decode + resize + encode in one process, no TFRecords."""
    paths = [os.path.join(folder, name) for folder, _, names in sorted(os.walk(input_dir))
             for name in sorted(names)]
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            conversion.encode_rgb_jpeg(f.read(), resize_shorter=resize_shorter, quality=95)
    return len(paths) / (time.perf_counter() - start), len(paths)


def measure_convert(input_dir, resize_shorter, workers):
    """Images/s of the conversion tool's library, whole run, into a fresh folder."""
    output_dir = tempfile.mkdtemp(prefix="convert_benchmark_")
    try:
        config = conversion.ConvertConfig(
            input_dir=input_dir, output_dir=output_dir, resize_shorter=resize_shorter,
            workers=workers, num_shards=max(8, 2 * workers), progress=False)
        start = time.perf_counter()
        summary = conversion.convert_split(config)
        return summary.num_examples / (time.perf_counter() - start)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def main(argv):
    del argv
    def generate(scratch):
        input_dir = os.path.join(scratch, "train")
        _generate(input_dir, _NUM_IMAGES.value)
        return input_dir

    with synthetic.given_or_generated(_INPUT_DIR.value, generate, prefix="convert_benchmark_images_") as input_dir:
        bare, count = measure_bare(input_dir, _RESIZE_SHORTER.value)
        print(f"files: {count} in {input_dir}")
        print(f"bare decode+resize+encode, 1 process: {bare:8.1f} images/s")
        rates = {}
        for workers in map(int, _WORKERS.value):
            rates[workers] = measure_convert(input_dir, _RESIZE_SHORTER.value, workers)
            print(f"convert --workers={workers}:              {rates[workers]:8.1f} images/s "
                  f"({rates[workers] / bare:.2f} of bare)")
    if 1 in rates:
        print(f"ratio convert(1) / bare: {rates[1] / bare:.2f} (goal >= 0.8)")
        for workers, rate in rates.items():
            if workers > 1:
                print(f"ratio convert({workers}) / convert(1): {rate / rates[1]:.2f} "
                      f"(goal >= {0.9 * workers:.1f})")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
