"""Procedural image datasets on disk: real JPEG files in ImageNet's folder layouts.

The quickstart and the tests use them, since nothing can be downloaded at run time. Each
class is a distinct pattern (orientation and frequency of stripes, rings or checks) in a
distinct colour, with random phase, scale, size and noise per image, so a small AlexNet
learns them quickly but not trivially.
"""

import contextlib
import logging
import os
import shutil
import tempfile

import numpy as np

logger = logging.getLogger(__name__)

_PATTERNS = ("stripes", "rings", "checks")


def class_ids(num_classes):
    """WordNet-like ids n00000000, n00000001, ... for the generated classes."""
    return [f"n{index:08d}" for index in range(num_classes)]


def render_image(class_index, num_classes, rng, *, height, width):
    """One RGB uint8 image [height, width, 3] of class `class_index`."""
    pattern = _PATTERNS[class_index % len(_PATTERNS)]
    angle = np.pi * (class_index // len(_PATTERNS)) / max(1, -(-num_classes // len(_PATTERNS)))
    hue = class_index / num_classes
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = min(height, width) / rng.uniform(5.0, 8.0)
    phase = rng.uniform(0, 2 * np.pi)
    u = (x * np.cos(angle) + y * np.sin(angle)) / scale
    v = (-x * np.sin(angle) + y * np.cos(angle)) / scale
    if pattern == "stripes":
        signal = np.sin(2 * np.pi * u + phase)
    elif pattern == "rings":
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        signal = np.sin(2 * np.pi * np.hypot(x - cx, y - cy) / scale + phase)
    else:
        signal = np.sign(np.sin(np.pi * u + phase) * np.sin(np.pi * v + phase))
    colour = 0.5 + 0.5 * np.cos(2 * np.pi * (hue + np.array([0.0, 1 / 3, 2 / 3])))
    brightness = rng.uniform(0.6, 1.0)
    image = 0.5 + 0.5 * signal[..., None] * (colour - 0.5) * 2 * brightness
    image = image * 200 + 28 + rng.normal(0, 12, size=image.shape)
    return np.uint8(np.clip(image, 0, 255))


def write_image_folder(root, *, num_classes, images_per_class, min_size=48, max_size=96,
                       seed=0, flat_with_labels=None):
    """Writes JPEG images of `num_classes` classes under `root`.

    Args:
      root: output folder (created).
      num_classes: number of classes.
      images_per_class: images of each class.
      min_size, max_size: range of each side (independently, so images are not square).
      seed: makes the files reproducible.
      flat_with_labels: None for one subfolder per class (ImageNet train); else a path for
        an ImageNet-validation layout: flat files in `root` and lines 'FILENAME CLASS' there.

    Returns:
      The list of class ids (folder names).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    ids = class_ids(num_classes)
    os.makedirs(root, exist_ok=True)
    label_lines = []
    for class_index, synset in enumerate(ids):
        folder = root if flat_with_labels else os.path.join(root, synset)
        os.makedirs(folder, exist_ok=True)
        for image_index in range(images_per_class):
            height, width = rng.integers(min_size, max_size + 1, size=2)
            pixels = render_image(class_index, num_classes, rng, height=int(height), width=int(width))
            name = f"{synset}_{image_index}.JPEG" if not flat_with_labels else (
                f"VAL_{class_index:04d}_{image_index:05d}.JPEG")
            Image.fromarray(pixels).save(os.path.join(folder, name), quality=90)
            label_lines.append(f"{name} {synset}\n")
    if flat_with_labels:
        with open(flat_with_labels, "w", encoding="utf-8") as f:
            f.writelines(label_lines)
    return ids


def write_converted_dataset(root, *, num_images, num_classes=10, min_size=333, max_size=500,
                            num_shards=8, seed=0):
    """ImageNet-sized generated JPEGs (about 500x375 by default) converted into shards.

    Returns the training shards' file pattern (for the benchmarks).
    """
    from pipelines import conversion, schema

    images = os.path.join(root, "images")
    write_image_folder(images, num_classes=num_classes,
                       images_per_class=max(1, num_images // num_classes),
                       min_size=min_size, max_size=max_size, seed=seed)
    output = os.path.join(root, "shards")
    conversion.convert_split(conversion.ConvertConfig(
        input_dir=images, output_dir=output, num_shards=num_shards, progress=False))
    return schema.split_file_pattern(output, schema.TRAIN_SPLIT)


def write_train_and_validation(root, *, num_classes, train_images_per_class, eval_images_per_class,
                               image_size):
    """Generates and converts a train and a validation split into `root` once (the
    quickstart's data; a later call reuses it). Returns the shards' folder.

    The stored shorter side is image_size * 256 / 224, so the paper's crops need no resize.
    """
    from pipelines import conversion, schema

    shards = os.path.join(root, "shards")
    info = schema.read_dataset_info(shards) or {}
    if {schema.TRAIN_SPLIT, schema.VALIDATION_SPLIT} <= set(info.get("splits", {})):
        logger.info("Reusing the generated dataset in %s", shards)
        return shards
    resize_shorter = round(image_size * 256 / 224)
    images = os.path.join(root, "images")
    logger.info("Generating %d classes x (%d + %d) images into %s", num_classes, train_images_per_class,
                eval_images_per_class, images)
    size = dict(min_size=resize_shorter, max_size=round(resize_shorter * 1.5))
    labels_file = os.path.join(images, "validation_labels.txt")
    write_image_folder(os.path.join(images, schema.TRAIN_SPLIT), num_classes=num_classes,
                       images_per_class=train_images_per_class, seed=1, **size)
    write_image_folder(os.path.join(images, schema.VALIDATION_SPLIT), num_classes=num_classes,
                       images_per_class=eval_images_per_class, seed=2, flat_with_labels=labels_file, **size)
    for split, extra in ((schema.TRAIN_SPLIT, {}), (schema.VALIDATION_SPLIT, {"labels_file": labels_file})):
        summary = conversion.convert_split(conversion.ConvertConfig(
            input_dir=os.path.join(images, split), output_dir=shards, split=split,
            resize_shorter=resize_shorter, progress=False, **extra))
        logger.info("Converted %s: %d examples in %d shards", split, summary.num_examples, summary.num_shards)
    return shards


@contextlib.contextmanager
def given_or_generated(given, generate, *, prefix):
    """Yields `given` if it is set, else `generate(scratch)` for a scratch folder that is
    removed afterwards (the benchmarks' default data)."""
    if given is not None:
        yield given
        return
    scratch = tempfile.mkdtemp(prefix=prefix)
    try:
        yield generate(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
