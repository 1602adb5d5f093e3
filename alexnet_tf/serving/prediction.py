"""Top-5 classes of image files by hand, through the same `serving_default` signature that TF
Serving runs: the library behind `python -m alexnet_tf.predict`."""

import dataclasses
import os
import tempfile

import tensorflow as tf

from alexnet_tf.serving import saved_model


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    images: tuple  # image file paths
    model_dir: str | None = None  # a run directory (its latest checkpoint is exported aside)
    saved_model: str | None = None  # or an exported version folder


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
    with tempfile.TemporaryDirectory() as scratch:
        path = config.saved_model
        if path is None:  # the export command's own library call, into a scratch folder
            path = saved_model.export_run(saved_model.ExportConfig(model_dir=config.model_dir, export_dir=scratch,
                                                                   version=1)).path
        serve = tf.saved_model.load(path).signatures["serving_default"]
        return [_predict_file(serve, image) for image in config.images]


def _predict_file(serve, image):
    if not os.path.isfile(image):
        return Prediction(image, missing=True)
    with open(image, "rb") as f:
        try:
            outputs = serve(image_bytes=tf.constant([f.read()]))
        except tf.errors.InvalidArgumentError as error:
            return Prediction(image, error=error.message.splitlines()[0])
    probabilities = outputs["probabilities"][0].numpy()
    top = tuple((float(probabilities[class_id]), int(class_id), name.decode())
                for class_id, name in zip(outputs["classes"][0].numpy(), outputs["class_names"][0].numpy()))
    return Prediction(image, top=top)
