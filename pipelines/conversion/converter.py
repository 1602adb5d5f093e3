"""`convert_split`, the library behind `python -m pipelines.convert`: plans a split, runs the
pending shards in worker processes with a progress bar, and records the split (and, for the
training split, the RGB mean and PCA) in dataset_info.json."""

import concurrent.futures
import concurrent.futures.process
import fcntl
import json
import logging
import multiprocessing
import os
import sys
import time

import numpy as np
import tqdm

from pipelines import schema
from pipelines.conversion import worker
from pipelines.conversion.planning import (MANIFEST_DIR, check_foreign_shards, info_path, is_complete, list_entries,
                                           plan_shards, read_class_names, remove_stale_temporaries,
                                           resolve_classes)
from pipelines.conversion.config import MAX_RESIZE_SHORTER, ConversionError, SplitSummary

logger = logging.getLogger(__name__)


def _validate(config):
    if not os.path.isdir(config.input_dir):
        raise ConversionError(f"--input_dir={config.input_dir} is not a folder.")
    for flag in ("labels_file", "synsets_file", "class_names_file"):
        path = getattr(config, flag)
        if path and not os.path.isfile(path):
            raise ConversionError(f"--{flag}={path} does not exist.")
    if not 0 <= config.resize_shorter <= MAX_RESIZE_SHORTER:
        raise ConversionError(f"Expected 0 <= --resize_shorter <= {MAX_RESIZE_SHORTER} (a JPEG's sides are at most "
                              f"65,535 pixels). Received: {config.resize_shorter}")
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
    entries = list_entries(config)
    if not entries:
        source = f"--labels_file={config.labels_file}" if config.labels_file else f"the class folders of {config.input_dir}"
        raise ConversionError(
            f"Split {config.split!r} has no input files in {source}. Expected one subfolder per "
            "class holding images, or a flat folder with --labels_file.")
    classes = resolve_classes(config, entries, info)
    class_names = dict(zip(info.get("classes", []), info.get("class_names", [])))
    if config.imagenet:
        from pipelines import imagenet

        class_names.update(zip(imagenet.wnids(), imagenet.class_names()))
    if config.class_names_file:
        class_names.update(read_class_names(config.class_names_file))
    tasks = plan_shards(config, entries, classes, class_names)
    check_foreign_shards(config, len(tasks))
    remove_stale_temporaries(config)
    pending = [task for task in tasks if not is_complete(task)]
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
    _update_dataset_info(config, classes, class_names, summary, manifests)
    return summary


def _run_tasks(config, tasks, *, total, done):
    if not tasks:
        return
    workers = min(config.workers or os.cpu_count() or 1, len(tasks))
    # Spawned (not forked) workers: the parent may already run TensorFlow threads. The
    # workers never import TensorFlow (see pipelines.tfrecord), so they start in ~0.2 s.
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", done)
    interactive = sys.stderr.isatty()
    # A bar on a terminal; in a log, a line every 30 s.
    with tqdm.tqdm(total=total, initial=done, unit="images", desc=f"Converting {config.split}",
                   disable=not config.progress, mininterval=0.5 if interactive else 30.0,
                   file=sys.stderr) as bar:
        def show_progress():
            bar.update(counter.value - bar.n)

        try:
            if workers == 1:
                worker.init_worker(counter)
                for task in tasks:
                    try:
                        worker.write_shard(task)
                    except worker.ShardError as error:
                        raise ConversionError(f"{error} Complete shards are kept: fix this, then rerun the "
                                              "same command to resume.") from error
                    show_progress()
            else:
                _run_in_processes(tasks, workers, context, counter, show_progress,
                                  interval=0.5 if interactive else 30.0)
        finally:
            worker.init_worker(None)
            show_progress()


def _run_in_processes(tasks, workers, context, counter, show_progress, *, interval):
    # ProcessPoolExecutor (not multiprocessing.Pool, which waits forever for the task of a
    # worker that was killed): a dead worker fails the run at once.
    with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=worker.init_worker, initargs=(counter,)) as pool:
        pending = {pool.submit(worker.write_shard, task) for task in tasks}
        try:
            while pending:
                finished, pending = concurrent.futures.wait(
                    pending, timeout=interval, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    future.result()
                show_progress()
        except concurrent.futures.process.BrokenProcessPool as error:
            _cancel(pool, pending)
            raise ConversionError(
                "A worker process died (killed, or out of memory?) while writing shards. "
                "Complete shards are kept: rerun the same command to resume.") from error
        except worker.ShardError as error:
            # Fail now, not after every remaining shard (hours on ImageNet): the shards not
            # started are cancelled; those being written finish, and are kept.
            _cancel(pool, pending)
            raise ConversionError(f"{error} Complete shards are kept: fix this, then rerun the same "
                                  "command to resume.") from error


def _cancel(pool, pending):
    for future in pending:
        future.cancel()
    pool.shutdown(wait=True, cancel_futures=True)


def _update_dataset_info(config, classes, class_names, summary, manifests):
    """Adds this split to dataset_info.json. Read again and written under a lock, so that
    conversions of other splits into the same folder at the same time keep their entries."""
    with open(os.path.join(config.output_dir, MANIFEST_DIR, "dataset_info.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = dict(schema.read_dataset_info(config.output_dir) or {})
        if info.get("classes") and list(info["classes"]) != list(classes):
            raise ConversionError(
                f"While split {config.split!r} was converted, another conversion wrote another class "
                f"list to {info_path(config)} ({len(info['classes'])} classes; this split has "
                f"{len(classes)}). Convert the splits with the same class list (--synsets_file), or "
                "into separate --output_dir folders.")
        _write_dataset_info(config, info, classes, class_names, summary, manifests)


def _write_dataset_info(config, info, classes, class_names, summary, manifests):
    known_names = dict(zip(info.get("classes", []), info.get("class_names", [])))
    class_names = {**{c: n for c, n in known_names.items() if n}, **{c: n for c, n in class_names.items() if n}}
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
    schema.write_json_atomically(info_path(config), info)


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
