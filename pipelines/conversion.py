"""ImageNet-style JPEG folders to sharded TFRecords: the library behind `pipelines.convert`.

One split per call. The plan (files, labels, shard assignment) is made in the parent from
file names only; worker processes each write whole shards. A shard is written under a
temporary name, its manifest (count, skipped files, pixel statistics, size, fingerprint of
the arguments) is saved in `output_dir/.convert/`, and only then is the shard renamed into
place: a shard under its final name with a matching manifest is complete, and a rerun skips
it. Everything a shard holds depends only on its files and the arguments, so the output is
byte-identical whatever the number of workers and however often the run was interrupted.
"""

import concurrent.futures
import concurrent.futures.process
import dataclasses
import glob
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import random
import sys
import threading
import time

import numpy as np

from pipelines import schema, tfrecord

MANIFEST_DIR = ".convert"
# Pixel statistics use every 4th row and column of every stored image: 1/16 of the pixels,
# ~5,000 per 256-px image, ~6e9 over ImageNet's training set (far more than a stable 3x3
# covariance needs) for ~0.1 ms per image.
STATS_PIXEL_STRIDE = 4
# ImageNet's tools: 1024 training / 128 validation shards; small inputs get fewer, with at
# least this many images in a shard.
DEFAULT_MAX_SHARDS = {schema.TRAIN_SPLIT: 1024}
DEFAULT_MAX_SHARDS_OTHER = 128
MIN_IMAGES_PER_SHARD = 100

logger = logging.getLogger(__name__)


class ConversionError(Exception):
    """Invalid input or arguments; the message says what and how to fix it."""


class BadImageError(Exception):
    """A file that cannot be turned into an RGB JPEG; the message is the reason."""


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    input_dir: str
    output_dir: str
    split: str = schema.TRAIN_SPLIT
    labels_file: str | None = None
    synsets_file: str | None = None
    class_names_file: str | None = None
    num_shards: int = 0  # 0: the default for the split and input size
    workers: int = 0  # 0: every core
    resize_shorter: int = 256
    quality: int = 95
    seed: int = 0
    max_bad_fraction: float = 0.001
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class SplitSummary:
    split: str
    num_examples: int
    num_shards: int
    num_files: int
    skipped: list
    shards_written: int
    shards_reused: int
    seconds: float

    @property
    def bad_fraction(self):
        return len(self.skipped) / max(1, self.num_files)


@dataclasses.dataclass(frozen=True)
class _Entry:
    path: str  # relative to input_dir
    synset: str


@dataclasses.dataclass(frozen=True)
class _ShardTask:
    index: int
    path: str
    manifest_path: str
    fingerprint: str
    input_dir: str
    entries: tuple  # of (relative path, label, synset, text)
    resize_shorter: int
    quality: int


# ---------------------------------------------------------------------------------------
# Images


def encode_rgb_jpeg(data, *, resize_shorter, quality):
    """Decodes any image Pillow reads and re-encodes it as an RGB JPEG.

    The format comes from the bytes, not the name (ImageNet has PNG and CMYK files named
    .JPEG). Alpha is composited over white; grayscale, palette and CMYK become RGB.

    Args:
      data: the file's bytes.
      resize_shorter: rescale (up or down) so the shorter side is this; 0 keeps the size.
      quality: JPEG quality.

    Returns:
      (jpeg bytes, height, width, the RGB uint8 array that was encoded).

    Raises:
      BadImageError: the bytes are empty or not a decodable image.
    """
    from PIL import Image

    if not data:
        raise BadImageError("empty file")
    try:
        image = Image.open(io.BytesIO(data))
        if resize_shorter and image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves the
            # shorter side >= resize_shorter: much faster for large photos.
            scale = resize_shorter / min(image.size)
            image.draft(image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        image.load()
        image = _to_rgb(image)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BadImageError(f"not a decodable image ({type(error).__name__}: {error})") from None
    if resize_shorter:
        width, height = image.size
        scale = resize_shorter / min(width, height)
        size = (
            resize_shorter if width <= height else max(1, round(width * scale)),
            resize_shorter if height < width else max(1, round(height * scale)),
        )
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), image.height, image.width, np.asarray(image)


def _to_rgb(image):
    from PIL import Image

    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits before the colour conversion.
        array = np.asarray(image, dtype=np.float64)
        peak = max(array.max(), 1.0)
        image = Image.fromarray(np.uint8(np.clip(array * (255.0 / peak), 0, 255)), mode="L")
    return image.convert("RGB")


def _pixel_sums(rgb):
    pixels = rgb[::STATS_PIXEL_STRIDE, ::STATS_PIXEL_STRIDE].reshape(-1, 3).astype(np.float64)
    return pixels.sum(axis=0), pixels.T @ pixels, len(pixels)


# ---------------------------------------------------------------------------------------
# Workers

_progress_counter = None


def _init_worker(counter):
    global _progress_counter
    _progress_counter = counter
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _write_shard(task):
    """Writes one shard (temporary file, manifest, rename). Returns the manifest."""
    skipped = []
    pixel_sum, pixel_outer, pixel_count = np.zeros(3), np.zeros((3, 3)), 0
    num_examples = 0
    unreported = 0
    tmp_path = _tmp_shard_path(task.path)
    try:
        with tfrecord.TFRecordWriter(tmp_path) as writer:
            for done, (relative_path, label, synset, text) in enumerate(task.entries, 1):
                try:
                    with open(os.path.join(task.input_dir, relative_path), "rb") as f:
                        data = f.read()
                    encoded, height, width, rgb = encode_rgb_jpeg(
                        data, resize_shorter=task.resize_shorter, quality=task.quality)
                except (BadImageError, OSError) as error:
                    reason = str(error) if isinstance(error, BadImageError) else f"unreadable ({error.strerror})"
                    skipped.append({"file": relative_path, "reason": reason})
                else:
                    writer.write(schema.make_example(
                        encoded=encoded, height=height, width=width, label=label,
                        synset=synset, text=text, filename=os.path.basename(relative_path)))
                    num_examples += 1
                    sums = _pixel_sums(rgb)
                    pixel_sum += sums[0]
                    pixel_outer += sums[1]
                    pixel_count += sums[2]
                unreported += 1
                if _progress_counter is not None and (unreported == 16 or done == len(task.entries)):
                    with _progress_counter.get_lock():
                        _progress_counter.value += unreported
                    unreported = 0
        manifest = {
            "fingerprint": task.fingerprint,
            "shard": os.path.basename(task.path),
            "num_examples": num_examples,
            "bytes": os.path.getsize(tmp_path),
            "skipped": skipped,
            "pixel_sum": pixel_sum.tolist(),
            "pixel_outer": pixel_outer.tolist(),
            "pixel_count": pixel_count,
        }
        schema.write_json_atomically(task.manifest_path, manifest)
        os.replace(tmp_path, task.path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    return manifest


def _tmp_shard_path(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp")


# ---------------------------------------------------------------------------------------
# Planning


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


def _list_entries(config):
    """[_Entry] of the split, sorted by path: from class folders or a labels file."""
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


def _resolve_classes(config, entries, info):
    """The class list (index = label): stored in dataset_info, else --synsets_file, else sorted."""
    if info and info.get("classes"):
        classes = list(info["classes"])
        if config.synsets_file:
            requested = _read_lines(config.synsets_file, "synsets file")
            if requested != classes:
                raise ConversionError(
                    f"--synsets_file={config.synsets_file} lists other classes than the "
                    f"{len(classes)} already in {_info_path(config)}. Convert into a new "
                    "--output_dir, or drop --synsets_file to reuse the stored class list.")
    elif config.synsets_file:
        classes = [line.split()[0] for line in _read_lines(config.synsets_file, "synsets file")]
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
        return _info_path(config)
    if config.synsets_file:
        return f"--synsets_file={config.synsets_file}"
    return "the input folders"


def _info_path(config):
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


def _is_complete(task):
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


def _check_foreign_shards(config, num_shards):
    pattern = schema.split_file_pattern(config.output_dir, config.split)
    foreign = [path for path in sorted(glob.glob(pattern))
               if schema.parse_shard_name(path)[2] != num_shards]
    if foreign:
        raise ConversionError(
            f"{config.output_dir} already holds {config.split!r} shards of another shard count "
            f"(e.g. {os.path.basename(foreign[0])}); readers would mix them with the "
            f"{num_shards} shards of this run. Convert into a new --output_dir, or pass the "
            "original --num_shards to resume.")


def _remove_stale_temporaries(config):
    for path in glob.glob(os.path.join(config.output_dir, f".{config.split}-*.tmp")):
        logger.info("Removing the stale temporary %s", path)
        os.remove(path)


def _plan(config, entries, classes, class_names):
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
        tasks.append(_ShardTask(
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


# ---------------------------------------------------------------------------------------
# Running


def _validate(config):
    if not os.path.isdir(config.input_dir):
        raise ConversionError(f"--input_dir={config.input_dir} is not a folder.")
    for flag in ("labels_file", "synsets_file", "class_names_file"):
        path = getattr(config, flag)
        if path and not os.path.isfile(path):
            raise ConversionError(f"--{flag}={path} does not exist.")
    if config.resize_shorter < 0:
        raise ConversionError(f"Expected --resize_shorter >= 0. Received: {config.resize_shorter}")
    if not 1 <= config.quality <= 100:
        raise ConversionError(f"Expected 1 <= --quality <= 100. Received: {config.quality}")
    if config.num_shards < 0 or config.workers < 0:
        raise ConversionError("Expected --num_shards and --workers >= 0 (0: automatic).")
    if not 0.0 <= config.max_bad_fraction <= 1.0:
        raise ConversionError(
            f"Expected 0 <= --max_bad_fraction <= 1. Received: {config.max_bad_fraction}")
    if not config.split or "/" in config.split or "-" in config.split:
        raise ConversionError(f"Expected --split to be a plain name such as 'train'. Received: {config.split!r}")


def convert_split(config):
    """Converts one split of `config.input_dir` into shards in `config.output_dir`.

    Args:
      config: a `ConvertConfig`.

    Returns:
      A `SplitSummary`. dataset_info.json in `output_dir` holds the split's entry.

    Raises:
      ConversionError: bad arguments or input (no files, unknown classes, shards of
        another run in the way).
    """
    _validate(config)
    start = time.perf_counter()
    os.makedirs(os.path.join(config.output_dir, MANIFEST_DIR), exist_ok=True)
    info = schema.read_dataset_info(config.output_dir) or {}
    entries = _list_entries(config)
    if not entries:
        source = f"--labels_file={config.labels_file}" if config.labels_file else f"the class folders of {config.input_dir}"
        raise ConversionError(
            f"Split {config.split!r} has no input files in {source}. Expected one subfolder per "
            "class holding images, or a flat folder with --labels_file.")
    classes = _resolve_classes(config, entries, info)
    class_names = dict(zip(info.get("classes", []), info.get("class_names", [])))
    if config.class_names_file:
        class_names.update(read_class_names(config.class_names_file))
    tasks = _plan(config, entries, classes, class_names)
    _check_foreign_shards(config, len(tasks))
    _remove_stale_temporaries(config)
    pending = [task for task in tasks if not _is_complete(task)]
    pending_indices = {task.index for task in pending}
    logger.info("Split %r: %d files in %d classes -> %d shards (%d already complete)",
                config.split, len(entries), len(classes), len(tasks), len(tasks) - len(pending))
    _run_tasks(config, pending, total=len(entries),
               done=sum(len(t.entries) for t in tasks if t.index not in pending_indices))
    manifests = []
    for task in tasks:
        with open(task.manifest_path, encoding="utf-8") as f:
            manifests.append(json.load(f))
    skipped = [item for manifest in manifests for item in manifest["skipped"]]
    for item in skipped:
        logger.warning("Skipped %s: %s", item["file"], item["reason"])
    summary = SplitSummary(
        split=config.split,
        num_examples=sum(m["num_examples"] for m in manifests),
        num_shards=len(tasks),
        num_files=len(entries),
        skipped=sorted(skipped, key=lambda item: item["file"]),
        shards_written=len(pending),
        shards_reused=len(tasks) - len(pending),
        seconds=time.perf_counter() - start,
    )
    _update_dataset_info(config, info, classes, class_names, summary, manifests)
    return summary


def _run_tasks(config, tasks, *, total, done):
    if not tasks:
        return
    workers = min(config.workers or os.cpu_count() or 1, len(tasks))
    # Spawned (not forked) workers: the parent may already run TensorFlow threads. The
    # workers never import TensorFlow (see pipelines.tfrecord), so they start in ~0.2 s.
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", done)
    reporter = _ProgressReporter(counter, total, enabled=config.progress)
    reporter.start()
    try:
        if workers == 1:
            _init_worker(counter)
            for task in tasks:
                _write_shard(task)
        else:
            # ProcessPoolExecutor (not multiprocessing.Pool, which waits forever for the task
            # of a worker that was killed): a dead worker fails the run at once.
            with concurrent.futures.ProcessPoolExecutor(
                    workers, mp_context=context, initializer=_init_worker, initargs=(counter,)) as pool:
                try:
                    for future in concurrent.futures.as_completed(
                            [pool.submit(_write_shard, task) for task in tasks]):
                        future.result()
                except concurrent.futures.process.BrokenProcessPool as error:
                    raise ConversionError(
                        "A worker process died (killed, or out of memory?) while writing shards. "
                        "Complete shards are kept: rerun the same command to resume.") from error
    finally:
        _init_worker(None)
        reporter.stop()


class _ProgressReporter:
    """Prints images done, images/s and the ETA: a bar on a terminal, a log line otherwise."""

    def __init__(self, counter, total, *, enabled):
        self._counter, self._total, self._enabled = counter, total, enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start_value = counter.value
        self._start_time = time.perf_counter()
        self._tty = sys.stderr.isatty()

    def start(self):
        if self._enabled:
            self._thread.start()

    def stop(self):
        if self._enabled:
            self._stop.set()
            self._thread.join()
            self._report(final=True)

    def _loop(self):
        interval = 0.5 if self._tty else 30.0
        while not self._stop.wait(interval):
            self._report(final=False)

    def _report(self, *, final):
        done = self._counter.value
        seconds = max(time.perf_counter() - self._start_time, 1e-9)
        rate = (done - self._start_value) / seconds
        eta = (self._total - done) / rate if rate > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "--:--:--"
        width = 30
        filled = int(width * done / max(1, self._total))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self._total} images, "
                f"{rate:.0f} images/s, ETA {eta_text}")
        if self._tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
            sys.stderr.flush()
        else:
            logger.info("%s", line)


def _update_dataset_info(config, info, classes, class_names, summary, manifests):
    info = dict(info)
    info["classes"] = classes
    info["class_names"] = [class_names.get(c, "") for c in classes]
    info["label_offset"] = schema.LABEL_OFFSET
    splits = dict(info.get("splits", {}))
    splits[config.split] = {
        "num_examples": summary.num_examples,
        "num_shards": summary.num_shards,
        "skipped": summary.skipped,
        "resize_shorter": config.resize_shorter,
    }
    info["splits"] = splits
    info["resize_shorter"] = config.resize_shorter
    if config.split == schema.TRAIN_SPLIT:
        info.update(rgb_statistics(manifests))
    schema.write_json_atomically(_info_path(config), info)


def rgb_statistics(manifests):
    """rgb_mean (0-255), rgb_eigval and rgb_eigvec (DESIGN.md units) from shard pixel sums."""
    count = sum(m["pixel_count"] for m in manifests)
    if not count:
        return {}
    pixel_sum = np.sum([m["pixel_sum"] for m in manifests], axis=0)
    pixel_outer = np.sum([m["pixel_outer"] for m in manifests], axis=0)
    mean = pixel_sum / count
    covariance = pixel_outer / count - np.outer(mean, mean)
    # Eigen-decomposition of the covariance of RGB in [0, 1]; eigenvalues times 255 so that
    # eigvec @ (alpha * eigval) is an offset in 0-255 units (the ImageNet constants' form).
    eigval, eigvec = np.linalg.eigh(covariance / 255.0**2)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
    # A fixed sign per eigenvector (largest component positive) makes the file reproducible.
    signs = np.sign(eigvec[np.argmax(np.abs(eigvec), axis=0), range(3)])
    eigvec = eigvec * np.where(signs == 0, 1.0, signs)
    return {
        "rgb_mean": [round(float(v), 6) for v in mean],
        "rgb_eigval": [round(float(v) * 255.0, 6) for v in eigval],
        "rgb_eigvec": [[round(float(v), 6) for v in row] for row in eigvec],
        "rgb_statistics_pixels": int(count),
    }
