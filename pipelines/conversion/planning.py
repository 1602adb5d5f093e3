"""The converter's plan, made in the parent from file names only: the split's files and
labels, the class list, the shard assignment (fixed by --seed), the fingerprint of the
arguments that makes a rerun resume, and what is already complete on disk."""

import dataclasses
import glob
import hashlib
import json
import logging
import os
import random
import re

from pipelines import schema
from pipelines.conversion.config import ConversionError

# Per-shard manifests in output_dir: what makes a rerun resume.
MANIFEST_DIR = ".convert"
# ImageNet's tools: 1024 training / 128 validation shards; small inputs get fewer, with at
# least this many images in a shard.
DEFAULT_MAX_SHARDS = {schema.TRAIN_SPLIT: 1024}
DEFAULT_MAX_SHARDS_OTHER = 128
MIN_IMAGES_PER_SHARD = 100

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Entry:
    path: str  # relative to input_dir
    synset: str


@dataclasses.dataclass(frozen=True)
class ShardTask:
    index: int
    path: str
    manifest_path: str
    fingerprint: str
    input_dir: str
    entries: tuple  # of (relative path, label, synset, text)
    resize_shorter: int
    quality: int


def read_class_names(path):
    """{synset: text} from ImageNet's LOC_synset_mapping.txt or words.txt (id, blank, text)."""
    names = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            names[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return names


def _read_lines(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError as error:
        raise ConversionError(f"Cannot read the {what} {path}: {error.strerror}.") from None


def _list_class_folders(input_dir):
    with os.scandir(input_dir) as entries:
        return sorted(entry.name for entry in entries
                      if entry.is_dir() and not entry.name.startswith("."))


def _imagenet_validation_entries(config):
    """[_Entry] of a flat folder of ILSVRC2012_val_NNNNNNNN.JPEG files, labelled by
    ILSVRC-2012's validation labels (a subset of the 50,000 is fine)."""
    from pipelines import imagenet

    labels = imagenet.validation_wnids()
    entries = []
    with os.scandir(config.input_dir) as files:
        names = sorted(f.name for f in files if f.is_file() and not f.name.startswith("."))
    for name in names:
        match = re.fullmatch(r"ILSVRC2012_val_(\d{8})\.JPEG", name)
        if not match or not 1 <= int(match.group(1)) <= len(labels):
            raise ConversionError(
                f"--imagenet with a flat --input_dir={config.input_dir} expects ILSVRC-2012 validation files "
                f"(ILSVRC2012_val_00000001.JPEG ... ILSVRC2012_val_00050000.JPEG). Received: {name}. Pass "
                "--labels_file for other flat folders.")
        entries.append(_Entry(name, labels[int(match.group(1)) - 1]))
    return entries


def list_entries(config):
    """[_Entry] of the split, sorted by path: from class folders, a labels file, or (with
    --imagenet, a flat folder) ILSVRC-2012's validation labels."""
    if config.imagenet and not config.labels_file and not _list_class_folders(config.input_dir):
        return _imagenet_validation_entries(config)
    if config.labels_file:
        entries = []
        for line_number, line in enumerate(_read_lines(config.labels_file, "labels file"), 1):
            parts = line.split()
            if len(parts) != 2:
                raise ConversionError(
                    f"Expected lines 'FILENAME CLASS' in --labels_file={config.labels_file}. "
                    f"Received at line {line_number}: {line!r}")
            entries.append(_Entry(parts[0], parts[1]))
        return sorted(entries, key=lambda e: e.path)
    entries = []
    for synset in _list_class_folders(config.input_dir):
        with os.scandir(os.path.join(config.input_dir, synset)) as files:
            names = sorted(f.name for f in files if f.is_file() and not f.name.startswith("."))
        entries.extend(_Entry(os.path.join(synset, name), synset) for name in names)
    return entries


def _requested_classes(config):
    if config.imagenet:
        from pipelines import imagenet

        return "--imagenet", list(imagenet.wnids())
    if config.synsets_file:
        lines = _read_lines(config.synsets_file, "synsets file")
        return f"--synsets_file={config.synsets_file}", [line.split()[0] for line in lines]
    return None, None


def resolve_classes(config, entries, info):
    """The class list (index = label): stored in dataset_info, else --imagenet's or
    --synsets_file's, else sorted."""
    source, requested = _requested_classes(config)
    if info and info.get("classes"):
        classes = list(info["classes"])
        if requested is not None and requested != classes:
            raise ConversionError(
                f"{source} lists other classes than the {len(classes)} already in {info_path(config)}. "
                f"Convert into a new --output_dir, or drop {source.split('=')[0]} to reuse the stored class list.")
    elif requested is not None:
        classes = requested
    elif config.labels_file:
        classes = sorted({entry.synset for entry in entries})
    else:
        classes = _list_class_folders(config.input_dir)
    if len(set(classes)) != len(classes):
        raise ConversionError(f"The class list has duplicates: {sorted(c for c in set(classes) if classes.count(c) > 1)[:5]}")
    unknown = sorted({entry.synset for entry in entries} - set(classes))
    if unknown:
        raise ConversionError(
            f"Split {config.split!r} has {len(unknown)} classes that are not in the class list "
            f"of {len(classes)} (from {_classes_source(config, info)}): {unknown[:5]}. Check "
            "--input_dir / --labels_file, or convert into a new --output_dir.")
    return classes


def _classes_source(config, info):
    if info and info.get("classes"):
        return info_path(config)
    source, _ = _requested_classes(config)
    return source or "the input folders"


def info_path(config):
    return os.path.join(config.output_dir, schema.DATASET_INFO_FILE)


def default_num_shards(split, num_files):
    """ImageNet's 1024 train / 128 other shards, fewer for small inputs."""
    max_shards = DEFAULT_MAX_SHARDS.get(split, DEFAULT_MAX_SHARDS_OTHER)
    return max(1, min(max_shards, num_files // MIN_IMAGES_PER_SHARD))


def _fingerprint(config, entries, classes, num_shards):
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "split": config.split, "resize_shorter": config.resize_shorter,
        "quality": config.quality, "seed": config.seed, "num_shards": num_shards,
        "classes": classes,
    }, sort_keys=True).encode())
    for entry in entries:
        digest.update(f"{entry.path}\0{entry.synset}\n".encode())
    return digest.hexdigest()[:16]


def is_complete(task):
    if not (os.path.exists(task.path) and os.path.exists(task.manifest_path)):
        return False
    try:
        with open(task.manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("fingerprint") != task.fingerprint:
        raise ConversionError(
            f"{task.path} was written with other arguments or input files than this run's. "
            "Rerun with the original arguments to resume, or convert into a new --output_dir.")
    return manifest.get("bytes") == os.path.getsize(task.path)


def check_foreign_shards(config, num_shards):
    pattern = schema.split_file_pattern(config.output_dir, config.split)
    foreign = [path for path in sorted(glob.glob(pattern))
               if schema.parse_shard_name(path)[2] != num_shards]
    if foreign:
        raise ConversionError(
            f"{config.output_dir} already holds {config.split!r} shards of another shard count "
            f"(e.g. {os.path.basename(foreign[0])}); readers would mix them with the "
            f"{num_shards} shards of this run. Convert into a new --output_dir, or pass the "
            "original --num_shards to resume.")


def remove_stale_temporaries(config):
    for path in glob.glob(os.path.join(config.output_dir, f".{config.split}-*.tmp")):
        logger.info("Removing the stale temporary %s", path)
        os.remove(path)


def plan_shards(config, entries, classes, class_names):
    num_shards = config.num_shards or default_num_shards(config.split, len(entries))
    if num_shards > len(entries):
        raise ConversionError(
            f"Expected --num_shards <= the {len(entries)} input files of split "
            f"{config.split!r}, so that no shard is empty. Received: {num_shards}")
    fingerprint = _fingerprint(config, entries, classes, num_shards)
    # A shuffled order fixed by --seed: every shard mixes classes.
    order = list(range(len(entries)))
    random.Random(config.seed).shuffle(order)
    label_of = {synset: index for index, synset in enumerate(classes)}
    tasks = []
    for index in range(num_shards):
        start = index * len(order) // num_shards
        stop = (index + 1) * len(order) // num_shards
        shard_entries = tuple(
            (entries[i].path, label_of[entries[i].synset], entries[i].synset,
             class_names.get(entries[i].synset, ""))
            for i in order[start:stop])
        name = schema.shard_name(config.split, index, num_shards)
        tasks.append(ShardTask(
            index=index,
            path=os.path.join(config.output_dir, name),
            manifest_path=os.path.join(config.output_dir, MANIFEST_DIR, f"{name}.json"),
            fingerprint=fingerprint,
            input_dir=config.input_dir,
            entries=shard_entries,
            resize_shorter=config.resize_shorter,
            quality=config.quality,
        ))
    return tasks


def tmp_shard_path(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp")
