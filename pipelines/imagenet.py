"""ILSVRC-2012's class list and validation labels, read from the installed
tensorflow-datasets package (no download, no TensorFlow import):

- `datasets/imagenet2012/labels.txt`: the 1000 WordNet ids, sorted, one per line: the label
  order of TFDS's imagenet2012, of the converter's sorted class folders, and the fc8 order
  of both Caffe's and torchvision's released weights;
- `datasets/imagenet2012/validation_labels.txt`: the WordNet id of each of the 50,000
  validation images, in the order of their names ILSVRC2012_val_00000001.JPEG, ...;
- `IMAGENET_LABELS_LIST` in `datasets/siscore/labels.py`: the 1000 names in the same order,
  all distinct ("crane (bird)" n02012849 and "crane (machine)" n03126707; "maillot" and
  "maillot, tank suit"). Read as a Python literal from the file's syntax tree, never imported.
"""

import ast
import functools
import importlib.util
import os

NUM_CLASSES = 1000
NUM_VALIDATION_IMAGES = 50_000


class ImageNetMetadataError(RuntimeError):
    """The installed tensorflow-datasets lacks a file this module reads; the message names it."""


def _tfds_file(relative):
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise ImageNetMetadataError("tensorflow-datasets is not installed: pip install tensorflow-datasets")
    path = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.isfile(path):
        raise ImageNetMetadataError(
            f"{path} is missing from the installed tensorflow-datasets: reinstall it (pip install "
            "--force-reinstall tensorflow-datasets).")
    return path


def _lines(relative, expected):
    with open(_tfds_file(relative), encoding="utf-8") as f:
        lines = tuple(line.strip() for line in f if line.strip())
    if len(lines) != expected:
        raise ImageNetMetadataError(f"{_tfds_file(relative)} has {len(lines)} lines; expected {expected}.")
    return lines


@functools.lru_cache(maxsize=None)
def wnids():
    """The 1000 WordNet ids, in label (sorted) order."""
    return _lines("datasets/imagenet2012/labels.txt", NUM_CLASSES)


@functools.lru_cache(maxsize=None)
def class_names():
    """The 1000 human-readable names, in label order (e.g. 'tench, Tinca tinca')."""
    path = _tfds_file("datasets/siscore/labels.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "IMAGENET_LABELS_LIST"):
            names = tuple(ast.literal_eval(node.value))
            if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:
                break
            return names
    raise ImageNetMetadataError(f"{path} holds no list IMAGENET_LABELS_LIST of {NUM_CLASSES} distinct names.")


@functools.lru_cache(maxsize=None)
def validation_wnids():
    """The WordNet id of each validation image, in file-name order."""
    return _lines("datasets/imagenet2012/validation_labels.txt", NUM_VALIDATION_IMAGES)


def validation_file_name(index):
    """The file name of validation image `index` (0-based): ILSVRC2012_val_00000001.JPEG, ..."""
    return f"ILSVRC2012_val_{index + 1:08d}.JPEG"
