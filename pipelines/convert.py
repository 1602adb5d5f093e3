r"""Converts an ImageNet-style JPEG folder into sharded TFRecords and dataset_info.json.

    # Training: one subfolder per class (the folder name is the class, e.g. n01440764).
    python -m pipelines.convert --input_dir=ILSVRC/train --output_dir=data/imagenet \
        --split=train --class_names_file=LOC_synset_mapping.txt
    # Validation: a flat folder and lines 'FILENAME CLASS'; reuses the stored class list.
    python -m pipelines.convert --input_dir=ILSVRC/val --output_dir=data/imagenet \
        --split=validation --labels_file=val_labels.txt
    # ImageNet (ILSVRC-2012) needs no labels or names files: --imagenet takes the class list,
    # the names and the validation labels from the installed tensorflow-datasets.
    python -m pipelines.convert --imagenet --input_dir=ILSVRC/train --output_dir=data/imagenet --split=train
    python -m pipelines.convert --imagenet --input_dir=ILSVRC/val --output_dir=data/imagenet --split=validation

Rerun the same command after an interruption: complete shards are kept, the rest redone.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from pipelines import conversion

_INPUT_DIR = flags.DEFINE_string("input_dir", None, "Folder of images: class subfolders, or flat with --labels_file.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for the shards and dataset_info.json.")
_SPLIT = flags.DEFINE_string("split", "train", "Split name: shards are {split}-NNNNN-of-NNNNN.")
_LABELS_FILE = flags.DEFINE_string("labels_file", None, "Lines 'FILENAME CLASS' for a flat --input_dir.")
_SYNSETS_FILE = flags.DEFINE_string("synsets_file", None, "One class id per line, in label order.")
_CLASS_NAMES_FILE = flags.DEFINE_string(
    "class_names_file", None, "Human-readable names: lines 'ID NAME' (LOC_synset_mapping.txt, words.txt).")
_IMAGENET = flags.DEFINE_bool(
    "imagenet", False, "ILSVRC-2012: its 1000 classes in sorted-wnid order with their names, and for a flat "
    "folder of ILSVRC2012_val_*.JPEG files their validation labels (from the installed tensorflow-datasets).")
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 0, "Shards for the split; 0: 1024 train / 128 other, fewer for small inputs.", lower_bound=0)
_WORKERS = flags.DEFINE_integer("workers", 0, "Worker processes; 0: one per core.", lower_bound=0)
_RESIZE_SHORTER = flags.DEFINE_integer(
    "resize_shorter", 256, "Shorter side of the stored images (the paper: 256); 0 keeps the size, and each RGB "
    "JPEG byte for byte (only CMYK, grayscale and non-JPEG files are re-encoded).", lower_bound=0,
    upper_bound=conversion.MAX_RESIZE_SHORTER)
_QUALITY = flags.DEFINE_integer("quality", 95, "JPEG quality of the stored images.", lower_bound=1, upper_bound=100)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the file-to-shard assignment.")
_MAX_BAD_FRACTION = flags.DEFINE_float(
    "max_bad_fraction", 0.001, "Exit 1 if more than this fraction of the files cannot be decoded.",
    lower_bound=0.0, upper_bound=1.0)
_VERIFY = flags.DEFINE_bool("verify", False, "After converting, read every shard back (see pipelines.verify).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar (a log line every 30 s when not a terminal).")

flags.mark_flags_as_required(["input_dir", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = conversion.ConvertConfig(
        input_dir=_INPUT_DIR.value,
        output_dir=_OUTPUT_DIR.value,
        split=_SPLIT.value,
        labels_file=_LABELS_FILE.value,
        synsets_file=_SYNSETS_FILE.value,
        class_names_file=_CLASS_NAMES_FILE.value,
        imagenet=_IMAGENET.value,
        num_shards=_NUM_SHARDS.value,
        workers=_WORKERS.value,
        resize_shorter=_RESIZE_SHORTER.value,
        quality=_QUALITY.value,
        seed=_SEED.value,
        max_bad_fraction=_MAX_BAD_FRACTION.value,
        progress=_PROGRESS.value,
    )
    try:
        summary = conversion.convert_split(config)
    except conversion.ConversionError as error:
        logging.error("%s", error)
        return 1
    print(f"{summary.split}: {summary.num_examples} examples in {summary.num_shards} shards "
          f"({summary.shards_written} written, {summary.shards_reused} already complete), "
          f"{len(summary.skipped)} of {summary.num_files} files skipped, "
          f"{summary.seconds:.1f} s")
    for item in summary.skipped:
        print(f"  skipped {item['file']}: {item['reason']}")
    status = 0
    if summary.bad_fraction > config.max_bad_fraction:
        logging.error("%.4f of the files could not be converted, more than --max_bad_fraction=%g.",
                      summary.bad_fraction, config.max_bad_fraction)
        status = 1
    if _VERIFY.value:
        from pipelines import verification

        report = verification.verify_dataset(config.output_dir, splits=[config.split])
        status = max(status, report.exit_code)
    return status


def run():
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
