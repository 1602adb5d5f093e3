"""Top-5 classes of image files by hand, through the same `serving_default` signature that TF
Serving runs: the library behind `python -m alexnet_tf.predict`."""

import dataclasses
import os
import sys
import tempfile

import tensorflow as tf
import tqdm

from alexnet_tf.serving import saved_model


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    images: tuple  # image file paths
    model_dir: str | None = None  # a run directory (its latest checkpoint is exported aside)
    saved_model: str | None = None  # or an exported version folder
    batch_size: int = 32  # images per forward pass: memory stays that of one batch
    progress: bool = True  # a bar on a terminal (a line every 30 s in a log) for long lists


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's top classes as (probability, class id, class name), best first; or why
    there are none (`missing`: no such file; `error`: the image cannot be read)."""

    image: str
    top: tuple = ()
    missing: bool = False
    error: str | None = None


def predict(config):
    """A `Prediction` per image of `config`, in order."""
    if bool(config.model_dir) == bool(config.saved_model):
        raise ValueError("Pass exactly one of model_dir and saved_model.")
    if not 1 <= config.batch_size <= 65536:
        raise ValueError(f"Expected 1 <= --batch_size <= 65536. Received: {config.batch_size}")
    with tempfile.TemporaryDirectory() as scratch:
        path = config.saved_model
        if path is None:  # the export command's own library call, into a scratch folder
            path = saved_model.export_run(saved_model.ExportConfig(model_dir=config.model_dir, export_dir=scratch,
                                                                   version=1)).path
        serve = tf.saved_model.load(path).signatures["serving_default"]
        results = []
        interactive = sys.stderr.isatty()
        with tqdm.tqdm(total=len(config.images), unit="images", desc="Predicting", file=sys.stderr,
                       disable=not config.progress or len(config.images) <= config.batch_size,
                       mininterval=0.5 if interactive else 30.0) as bar:
            for start in range(0, len(config.images), config.batch_size):
                chunk = config.images[start:start + config.batch_size]
                results.extend(_predict_files(serve, chunk))
                bar.update(len(chunk))
        return results


def _predict_files(serve, images):
    """The `Prediction`s of `images`: one forward pass for those that read; an image that does
    not decode fails the batch, which then goes image by image to name it."""
    data = {}
    for image in images:
        if os.path.isfile(image):
            with open(image, "rb") as f:
                data[image] = f.read()
    readable = [image for image in images if image in data]
    try:
        outputs = serve(image_bytes=tf.constant([data[image] for image in readable])) if readable else None
    except tf.errors.InvalidArgumentError:
        if len(readable) == 1:
            outputs = None
        else:
            return [prediction for image in images for prediction in _predict_files(serve, [image])]
    results = []
    for image in images:
        if image not in data:
            results.append(Prediction(image, missing=True))
        elif outputs is None:
            results.append(_predict_one(serve, image, data[image]))
        else:
            row = readable.index(image)
            results.append(_prediction(image, outputs, row))
    return results


def _predict_one(serve, image, data):
    try:
        outputs = serve(image_bytes=tf.constant([data]))
    except tf.errors.InvalidArgumentError as error:
        return Prediction(image, error=error.message.splitlines()[0])
    return _prediction(image, outputs, 0)


def _prediction(image, outputs, row):
    probabilities = outputs["probabilities"][row].numpy()
    top = tuple((float(probabilities[class_id]), int(class_id), name.decode())
                for class_id, name in zip(outputs["classes"][row].numpy(), outputs["class_names"][row].numpy()))
    return Prediction(image, top=top)
