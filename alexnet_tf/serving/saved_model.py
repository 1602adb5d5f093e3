"""SavedModel export for TF Serving: the library behind `python -m alexnet_tf.export`
(`export_run`: a run's checkpoint as a SavedModel version, or as a bvlc_alexnet .npy).

The export is a plain `tf.Module` of traced functions: it loads with TensorFlow alone (no
project code, no Keras custom objects). Signatures:

- `serving_default`: `image_bytes` tf.string [None] (JPEG or PNG; the `_bytes` suffix lets
  TF Serving's REST API take {"b64": ...}) -> `probabilities` [None, C] float32, `classes`
  [None, 5] int32 (top-5 ids), `class_names` [None, 5] tf.string. Preprocessing is the
  evaluation pipeline's own code (`pipelines.dataset.decode_for_eval`): centre 224/256
  square of the shorter side, resized to the model's size, minus the training mean; for
  imported weights, the crop their own pipeline makes (Caffe's, torchvision's), as the run
  directory records.
- `serving_pixels`: `images` uint8 [None, S, S, 3], already cropped RGB -> the same outputs.
- `features`: `image_bytes` as `serving_default` -> `fc7` float32 [None, fc units], the
  features after ReLU (the paper's Section 6.1 compares them by Euclidean distance).

Hardening: only JPEG and PNG are accepted; the header's width x height is checked against
`max_pixels` before anything is decoded (a small PNG can declare 16000x16000); undecodable
bytes raise InvalidArgumentError (HTTP 400 in TF Serving) and the server keeps serving.

A version is written to a temporary folder beside `export_dir/<version>` and renamed into
place, so a server watching `export_dir` never sees half a version. Before the rename it is
loaded the way TF Serving loads it (`session_loader`: the MetaGraph into a Session, the
saver's restore op, the warm-up records replayed by the SignatureDefs' tensor names) and
every warm-up answer is compared with the traced function's: a version TF Serving could not
load is an error, never published. `assets.extra/tf_serving_warmup_requests` holds real
requests for every signature, so TF Serving warms each one before it reports the model ready.
"""

import contextlib
import dataclasses
import glob
import logging
import math
import os
import shutil

import numpy as np
import tensorflow as tf
import keras

from alexnet_tf.model.layers import portable_kernels
from alexnet_tf.model.alexnet import feature_model
from alexnet_tf import run_dir
from alexnet_tf.serving import session_loader
from pipelines import dataset as datasets

DEFAULT_MAX_PIXELS = 64_000_000  # 64 megapixels, ~8000 x 8000
WARMUP_FILE = session_loader.WARMUP_FILE
TOP_K = 5

logger = logging.getLogger(__name__)


class ExportError(Exception):
    """The export cannot be written as asked; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    model_dir: object  # a run directory, or a sequence of them: their ensemble (a SavedModel)
    checkpoint: str | None = None  # default: the latest
    format: str = "saved_model"  # "npy": the weights in the bvlc_alexnet layout; "tflite": TF Lite
    export_dir: str | None = None  # default: model_dir/export
    version: int | None = None  # default: the next
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    output: str | None = None  # the .npy / .tflite file (default: in model_dir, see run_dir)
    quantize: str = "none"  # with "tflite": "dynamic" stores int8 weights


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: str
    checkpoint: str
    differences_from_caffe: tuple = ()  # with format "npy": why Caffe computes another function


def export_run(config):
    """Exports a run's checkpoint as `config` says. Returns an `ExportResult`.

    Raises:
      FileNotFoundError: no run directory or checkpoint.
      FileExistsError, ExportError: the target exists (pass overwrite) or is invalid.
    """
    if config.format not in ("saved_model", "npy", "tflite"):
        raise ExportError(f"Expected format 'saved_model', 'npy' or 'tflite'. Received: {config.format!r}")
    if not isinstance(config.model_dir, (str, os.PathLike)):
        return _export_ensemble(config)
    # A flag of another format would be ignored: the user meant something this does not do.
    misplaced = [flag for flag, given, formats in (
        ("--quantize", config.quantize != "none", ("tflite",)),
        ("--output", config.output and isinstance(config.model_dir, (str, os.PathLike)), ("npy", "tflite")),
        ("--export_dir", config.export_dir, ("saved_model",)), ("--version", config.version, ("saved_model",)))
        if given and config.format not in formats]
    if misplaced:
        raise ExportError(f"{' and '.join(misplaced)} not for --format={config.format} (it would be ignored): "
                          "drop it, or pass the --format it is for (see --help).")
    with _float32_policy():
        model, spec, checkpoint = run_dir.load_model(config.model_dir, config.checkpoint)
    if config.format == "tflite":
        from alexnet_tf.serving import tflite

        default = run_dir.TFLITE_FILE if config.quantize == "none" else run_dir.TFLITE_DYNAMIC_FILE
        path = config.output or os.path.join(config.model_dir, default)
        flatbuffer = tflite.convert_to_tflite(model, rgb_mean=run_dir.statistics_of(spec).rgb_mean,
                                              image_size=model.input.shape[1], quantize=config.quantize)
        return ExportResult(tflite.write_tflite(path, flatbuffer, overwrite=config.overwrite), checkpoint)
    if config.format == "npy":
        from alexnet_tf.weights import caffe

        if run_dir.network_of(spec).removed_layers:
            raise ExportError(f"The bvlc_alexnet layout holds all eight layers; {config.model_dir}'s network leaves "
                              f"out {', '.join(run_dir.network_of(spec).removed_layers)}. Export it as a SavedModel "
                              "or TensorFlow Lite instead.")

        path = config.output or os.path.join(config.model_dir, run_dir.NPY_WEIGHTS_FILE)
        differences = caffe.export_npy(model, run_dir.network_of(spec), path, overwrite=config.overwrite)
        return ExportResult(path, checkpoint, tuple(differences))
    path = export_model(
        model, export_dir=config.export_dir or os.path.join(config.model_dir, run_dir.EXPORT_DIR),
        class_names=spec.get("class_names", ()), statistics=run_dir.statistics_of(spec),
        preprocessing=run_dir.preprocessing_of(spec), version=config.version, overwrite=config.overwrite, max_pixels=config.max_pixels)
    return ExportResult(path, checkpoint)


@contextlib.contextmanager
def _float32_policy():
    """A float32 model whatever the training precision (or a global policy the caller left)."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _export_ensemble(config):
    """The runs' ensemble as one SavedModel version (`--output` or `--export_dir` the base
    folder; default the first run's export/): the same signatures, the members' softmax
    averaged, `features` their fc7 side by side."""
    from alexnet_tf.model.ensemble import ensemble_model
    from alexnet_tf.serving import evaluation

    if config.format != "saved_model":
        raise ExportError(f"An ensemble exports as a SavedModel; --format={config.format} holds one network.")
    if config.checkpoint:
        raise ExportError("--checkpoint picks one run's checkpoint; an ensemble uses each member's latest.")
    if config.output and config.export_dir:
        raise ExportError("Pass --output or --export_dir (the same folder for a SavedModel), not both.")
    dirs = tuple(map(str, config.model_dir))
    try:
        # The members of one ensemble as evaluation checks them (classes, input size, crop).
        evaluation.check_members(dirs, crops=1)
        with _float32_policy():
            members = [run_dir.load_model(model_dir) for model_dir in dirs]
    except ValueError as error:
        raise ExportError(str(error)) from None
    statistics = [run_dir.statistics_of(spec) for _, spec, _ in members]
    model, features = ensemble_model([member for member, _, _ in members], [s.rgb_mean for s in statistics])
    first = members[0][1]
    path = export_model(
        model, export_dir=config.output or config.export_dir or os.path.join(dirs[0], run_dir.EXPORT_DIR),
        class_names=first.get("class_names", ()), statistics=statistics[0],
        preprocessing=run_dir.preprocessing_of(first), version=config.version, overwrite=config.overwrite,
        max_pixels=config.max_pixels, features_model=features)
    return ExportResult(path, ",".join(checkpoint for _, _, checkpoint in members))


def _image_dimensions(image_bytes):
    """(height, width) from a JPEG or PNG header, without decoding; error for anything else."""
    is_jpeg = tf.io.is_jpeg(image_bytes)
    is_png = tf.equal(tf.strings.substr(image_bytes, 0, 8), b"\x89PNG\r\n\x1a\n")
    supported = tf.debugging.Assert(tf.logical_or(is_jpeg, is_png),
                                    ["Unsupported image: send JPEG or PNG bytes."])

    def png_dimensions():
        # IHDR: width and height, 4 bytes big-endian each, at bytes 16..23.
        header = tf.io.decode_raw(tf.strings.substr(image_bytes, 16, 8), tf.uint8)
        header = tf.cast(tf.ensure_shape(header, [8]), tf.int64)
        weights = tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64)
        return tf.reduce_sum(header[4:] * weights), tf.reduce_sum(header[:4] * weights)

    def jpeg_dimensions():
        shape = tf.cast(tf.io.extract_jpeg_shape(image_bytes), tf.int64)
        return shape[0], shape[1]

    with tf.control_dependencies([supported]):
        return tf.cond(is_jpeg, jpeg_dimensions, png_dimensions)


def preprocess_image_bytes(image_bytes, *, image_size, max_pixels, preprocessing="paper"):
    """uint8 [S, S, 3] of one encoded image, as the evaluation pipeline crops it."""
    height, width = _image_dimensions(image_bytes)
    small_enough = tf.debugging.Assert(
        tf.logical_and(height * width <= max_pixels, height * width > 0),
        ["Image too large or empty: its header declares", height, "x", width,
         f"pixels; the limit is {max_pixels} pixels."])
    # Nothing is decoded before the header has passed the size check.
    with tf.control_dependencies([small_enough]):
        return datasets.decode_for_eval(image_bytes, image_size=image_size, preprocessing=preprocessing)


class ServingModule(tf.Module):
    """The model with its preprocessing and class names, as TF Serving signatures."""

    def __init__(self, model, *, class_names, rgb_mean, image_size, max_pixels=DEFAULT_MAX_PIXELS,
                 preprocessing="paper", features_model=None):
        super().__init__(name="alexnet_serving")
        self.model = model
        self.preprocessing = preprocessing
        self.features_model = features_model or feature_model(model)
        self.image_size = image_size
        self.max_pixels = max_pixels
        num_classes = model.output.shape[-1]
        names = list(class_names) if class_names else []
        if len(names) != num_classes:
            names = [str(i) for i in range(num_classes)]
        self.class_names = tf.Variable(names, trainable=False, dtype=tf.string, name="class_names")
        self.rgb_mean = tf.Variable(np.asarray(rgb_mean, np.float32), trainable=False, name="rgb_mean")
        self.top_k = min(TOP_K, num_classes)
        self.serve_bytes = tf.function(self._serve_bytes, input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes")])
        self.serve_pixels = tf.function(self._serve_pixels, input_signature=[
            tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")])
        self.serve_features = tf.function(self._serve_features, input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes")])

    def signatures(self):
        """{signature name: concrete function}, traced (once: tf.function keeps the traces)
        with the portable kernels.

        The variables the functions read are tracked on the module itself, as Keras'
        `ExportArchive` does: a Keras 3 model reached through an attribute puts its
        `keras.Variable`s in the object graph, but not the `tf.Variable`s behind them in the
        saver that TF Serving's loader runs, which then restores nothing
        (keras-team/keras#20096)."""
        # Plain ops only (no XLA, no grouped convolution): TF Serving's defaults run them.
        with portable_kernels():
            signatures = {"serving_default": self.serve_bytes.get_concrete_function(),
                          "serving_pixels": self.serve_pixels.get_concrete_function(),
                          "features": self.serve_features.get_concrete_function()}
        used = {}
        for function in signatures.values():
            for variable in function.variables:
                used.setdefault(id(variable), variable)
        self.served_variables = list(used.values())
        return signatures

    def _images(self, pixels):
        return tf.cast(pixels, tf.float32) - self.rgb_mean

    def _pixels(self, image_bytes):
        return tf.map_fn(
            lambda b: preprocess_image_bytes(b, image_size=self.image_size, max_pixels=self.max_pixels,
                                             preprocessing=self.preprocessing),
            image_bytes,
            fn_output_signature=tf.TensorSpec([self.image_size, self.image_size, 3], tf.uint8))

    def _outputs(self, pixels):
        logits = tf.cast(self.model(self._images(pixels), training=False), tf.float32)
        probabilities = tf.nn.softmax(logits)
        top = tf.math.top_k(probabilities, k=self.top_k)
        return {"probabilities": probabilities,
                "classes": tf.cast(top.indices, tf.int32),
                "class_names": tf.gather(self.class_names, top.indices)}

    def _serve_bytes(self, image_bytes):
        return self._outputs(self._pixels(image_bytes))

    def _serve_pixels(self, images):
        return self._outputs(images)

    def _serve_features(self, image_bytes):
        return {"fc7": self.features_model(self._images(self._pixels(image_bytes)), training=False)}


def next_version(export_dir):
    """1 + the largest numeric version folder in export_dir (1 if none)."""
    versions = [int(name) for name in (os.listdir(export_dir) if os.path.isdir(export_dir) else [])
                if name.isdigit()]
    return max(versions, default=0) + 1


def warmup_requests(image_size, max_pixels=DEFAULT_MAX_PIXELS):
    """Real requests for every signature, as (signature name, {input name: ndarray}): the
    warm-up records TF Serving replays while loading, and what the export is checked on.
    Each image is within `max_pixels` (scaled down to fit, aspect kept), so that a version
    serving only small images warms up too."""
    rng = np.random.default_rng(0)
    jpegs = []
    for height, width in ((image_size + 40, image_size + 90), (300, 200), (image_size, image_size), (480, 640)):
        if height * width > max_pixels:
            scale = math.sqrt(max_pixels / (height * width))
            height, width = max(1, math.floor(height * scale)), max(1, math.floor(width * scale))
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        jpegs.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    pixels = rng.integers(0, 256, size=(2, image_size, image_size, 3), dtype=np.uint8)
    return [("serving_default", {"image_bytes": np.array(jpegs[:1], dtype=object)}),
            ("serving_default", {"image_bytes": np.array(jpegs, dtype=object)}),
            ("serving_pixels", {"images": pixels}),
            ("features", {"image_bytes": np.array(jpegs[1:3], dtype=object)})]


def _write_warmup_requests(path, requests):
    """`requests` as PredictionLog records (TF Serving's warm-up format)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name="alexnet", signature_name=signature_name))
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _check_session_serving(path, signatures):
    """Loads `path` as TF Serving does (`session_loader`) and replays its warm-up records,
    each answer compared with `signatures`' own (the traced functions just saved). Raises
    ExportError when a step fails or an answer differs."""
    try:
        with session_loader.SessionModel(path) as served:
            served_names = {name for name in served.signatures if not name.startswith("__")}
            if served_names != set(signatures):
                raise ExportError(f"{path} has signatures {sorted(served_names)} in its MetaGraph; "
                                  f"expected {sorted(signatures)}.")
            requests = served.warmup_requests()
            unwarmed = set(signatures) - {name for name, _, _ in requests}
            if unwarmed:
                raise ExportError(f"{path}'s warm-up records leave {sorted(unwarmed)} unchecked.")
            for index, (name, inputs, output_filter) in enumerate(requests):
                answer = served.run(name, inputs, output_filter)
                expected = signatures[name](**{key: tf.constant(value) for key, value in inputs.items()})
                for key, value in answer.items():
                    reference = expected[key].numpy()
                    close = (np.allclose(value, reference, rtol=1e-5, atol=1e-5) if reference.dtype.kind == "f"
                             else value.shape == reference.shape)
                    if not close:
                        raise ExportError(f"Warm-up record {index} ({name}): output {key!r} through the session "
                                          "loader differs from the saved function's.")
    except (tf.errors.OpError, session_loader.ServingLoadError) as error:
        raise ExportError(f"The SavedModel does not answer through TensorFlow's session loader, the path "
                          f"TF Serving loads it by: {session_loader.error_summary(error)} (nothing was published)") from error


def export_model(model, *, export_dir, class_names=(), statistics=None, image_size=None, version=None,
                 overwrite=False, max_pixels=DEFAULT_MAX_PIXELS, preprocessing="paper", features_model=None):
    """Writes `export_dir/<version>` atomically. Returns its path.

    Args:
      model: the Keras AlexNet (logits out).
      export_dir: base folder a TF Serving process watches.
      class_names: human-readable names per class id (else the ids are used).
      statistics: `pipelines.DatasetStatistics` with the training mean (default: ImageNet's).
      image_size: model input side (default: the model's).
      version: integer version (default: the next one).
      overwrite: replace an existing version (else that is an error).
      max_pixels: the largest width x height accepted in `image_bytes`.
      preprocessing: the crop of `image_bytes` ("paper", or imported weights' "caffe" or
        "torchvision": `pipelines.preprocessing`).
      features_model: what the `features` signature serves (default: the model's fc7).
    """
    statistics = statistics or datasets.DatasetStatistics()
    image_size = image_size or model.input.shape[1]
    version = next_version(export_dir) if version is None else int(version)
    if version < 1:
        raise ExportError(f"Expected --version >= 1. Received: {version}")
    target = os.path.join(export_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise ExportError(f"{target} exists. Pass --overwrite to replace it, or another --version.")
    os.makedirs(export_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(export_dir, f".tmp-{version}-*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
    module = ServingModule(model, class_names=class_names, rgb_mean=statistics.rgb_mean,
                           image_size=image_size, max_pixels=max_pixels, preprocessing=preprocessing,
                           features_model=features_model)
    try:
        # Saving traces the Keras models' own call functions too: portable kernels for those as well.
        with portable_kernels():
            signatures = module.signatures()
            tf.saved_model.save(module, tmp, signatures=signatures)
        _write_warmup_requests(os.path.join(tmp, WARMUP_FILE), warmup_requests(image_size, max_pixels))
        # Published only once it answers as TF Serving will load it.
        _check_session_serving(tmp, signatures)
        if os.path.exists(target):
            old = os.path.join(export_dir, f".old-{version}-{os.getpid()}")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Exported %s", target)
    return target
