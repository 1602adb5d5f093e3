"""AlexNet the `keras.applications` way: `AlexNet(weights=...)`, `preprocess_input`,
`decode_predictions`, and `load_image` for each weight set's own crop.

Weight sets:
- "torchvision": torchvision's AlexNet_Weights.IMAGENET1K_V1 (56.522% / 79.066% top-1 /
  top-5 on ILSVRC-2012 validation), fetched once with `keras.utils.get_file` into the Keras
  cache (`$KERAS_HOME/models`, default ~/.keras/models) and checked against its SHA-256.
  The model takes torchvision's input: RGB, (x / 255 - mean) / std.
- "bvlc_alexnet": Caffe's released weights (57.1% / 80.2%) in the caffe-tensorflow .npy
  layout. No hash of that conversion is published, so nothing is downloaded: put the file at
  `$KERAS_HOME/models/bvlc_alexnet.npy` (the error says where), or pass its path. The model
  takes Caffe's input: BGR minus Caffe's mean pixel.
- a path: a .pth or .npy of either layout, told apart by content; or a run directory (trained
  here or from `alexnet_tf.import_weights`): its latest checkpoint, for RGB minus the run's
  mean, with the crop its `model_spec.json` records.
- None: the paper's network (two towers, LRN), randomly initialised, for RGB minus the
  ImageNet mean (`pipelines.constants`).

`preprocess_input(x, weights=...)` turns RGB 0-255 pixels into what that weight set's model
takes; `load_image(path, weights=...)` makes the crop the weights were measured on (Caffe's
warp to 256x256 and centre 227; torchvision's shorter side to 256 and centre 224; see
`pipelines.preprocessing`). Together they reproduce the published figures.
"""

import dataclasses
import os

import numpy as np
import keras

from alexnet_tf.model.alexnet import WEIGHTED_LAYERS, build_alexnet
from alexnet_tf.model.spec import MIN_IMAGE_SIZE, AlexNetSpec
from alexnet_tf.weights import caffe, torchvision
from alexnet_tf.weights.layer_weights import assign_weights
from pipelines import constants
from pipelines import preprocessing as conventions

TORCHVISION = "torchvision"
BVLC_ALEXNET = "bvlc_alexnet"


@dataclasses.dataclass(frozen=True)
class WeightSet:
    file_name: str
    origin: str
    sha256: str | None  # None: not fetched, only looked up in the cache
    preprocessing: str


WEIGHT_SETS = {
    TORCHVISION: WeightSet(
        file_name="alexnet-owt-7be5be79.pth", origin="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        preprocessing=conventions.TORCHVISION),
    # The file the community uses (caffe-tensorflow's conversion of Caffe's bvlc_alexnet
    # .caffemodel), commonly found at http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy.
    BVLC_ALEXNET: WeightSet(
        file_name="bvlc_alexnet.npy", origin="http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy",
        sha256=None, preprocessing=conventions.CAFFE),
}
_POOLINGS = (None, "avg", "max")


def _cache_dir():
    """Keras' cache: $KERAS_HOME (read now; Keras reads it once, at import), else ~/.keras.
    Created, as `get_file` would otherwise fall back to /tmp/.keras for a missing folder."""
    path = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    os.makedirs(os.path.join(path, "models"), exist_ok=True)
    return path


def weights_file(weights):
    """The local file of a named weight set: fetched with its hash check (torchvision), or
    found in the Keras cache (bvlc_alexnet); a path is returned as is."""
    if not (isinstance(weights, str) and weights in WEIGHT_SETS):
        return weights
    weight_set = WEIGHT_SETS[weights]
    if weight_set.sha256:
        return keras.utils.get_file(weight_set.file_name, weight_set.origin, file_hash=weight_set.sha256,
                                    hash_algorithm="sha256", cache_subdir="models", cache_dir=_cache_dir())
    path = os.path.join(_cache_dir(), "models", weight_set.file_name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights={weights!r}: {path} is missing. No checksum of the {weight_set.file_name} conversion is "
            f"published, so it is not downloaded for you: get it (e.g. {weight_set.origin}) and put it at {path}, "
            "or pass weights=PATH. It is read without running any pickled code.")
    return path


def _format_of(path):
    return TORCHVISION if torchvision.is_pth(path) else BVLC_ALEXNET


def _run_spec(weights):
    """The model_spec.json of a run directory, or None for anything else."""
    if isinstance(weights, (str, os.PathLike)) and os.path.isdir(weights):
        from alexnet_tf import run_dir

        return run_dir.read_model_spec(os.fspath(weights))
    return None


def _preprocessing_of(weights):
    if weights is None:
        return conventions.PAPER
    if isinstance(weights, str) and weights in WEIGHT_SETS:
        return WEIGHT_SETS[weights].preprocessing
    spec = _run_spec(weights)
    if spec is not None:
        from alexnet_tf import run_dir

        return run_dir.preprocessing_of(spec)
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return WEIGHT_SETS[_format_of(weights)].preprocessing
    raise ValueError(
        "The `weights` argument should be either `None` (random initialization), 'bvlc_alexnet', "
        "'torchvision', or the path to the weights file to be loaded (or a run directory). Received: "
        f"weights={weights!r}")


def _read(path):
    """(weights {layer: (kernel, bias)} for the weight set's own input, their `AlexNetSpec`)."""
    if os.path.isdir(path):
        from alexnet_tf import run_dir

        model, spec, _ = run_dir.load_model(os.fspath(path))
        return ({layer: (model.get_layer(layer).kernel.numpy(), model.get_layer(layer).bias.numpy())
                 for layer in WEIGHTED_LAYERS}, run_dir.network_of(spec))
    if _format_of(path) == TORCHVISION:
        return torchvision.weights_of_state_dict(torchvision.read_pth_state_dict(path), path=path)
    weights = caffe.read_npy_weights(path)
    return weights, caffe.network_of_weights(weights, path=path)


def _image_size(input_shape, *, default, include_top, fixed_with_top, weights):
    if input_shape is None:
        return default
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[2] != 3 or shape[0] != shape[1] or shape[0] is None:
        raise ValueError(f"input_shape must be (size, size, 3), square RGB. Received: input_shape={input_shape}")
    if shape[0] < MIN_IMAGE_SIZE:
        raise ValueError(f"Input size must be at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}; Received: "
                         f"input_shape={input_shape}")
    if include_top and fixed_with_top and shape[0] != default:
        raise ValueError(
            f"When setting `include_top=True` and loading {weights!r} weights, `input_shape` should be "
            f"({default}, {default}, 3). Received: input_shape={input_shape}")
    return int(shape[0])


def AlexNet(  # noqa: N802 (the keras.applications naming)
    weights=TORCHVISION,
    include_top=True,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="alexnet",
):
    """Instantiates AlexNet, optionally with released ImageNet weights.

    Args:
      weights: "torchvision" (default; fetched and hash-checked), "bvlc_alexnet" (from the
        Keras cache), a path to either file or to a run directory, or None (the paper's
        network, random init).
      include_top: whether to include fc6, fc7 and fc8.
      input_shape: (S, S, 3). Defaults to the weights' own size (227 for bvlc_alexnet, 224
        for torchvision, a run's image size). With the top, the weights' size is required,
        except where torchvision's adaptive pool takes any S >= 64, as in PyTorch.
      pooling: without the top, None (pool5's 4D output), "avg" or "max" (global pooling).
      classes: classes of fc8; with pretrained weights and the top, the weights' (1000).
      classifier_activation: applied to fc8's logits ("softmax" or None with pretrained
        weights; any Keras activation otherwise).
      name: the model's name.

    Returns:
      A `keras.Model` whose input is `preprocess_input(..., weights=weights)` of RGB images.
    """
    _preprocessing_of(weights)  # checks `weights` before anything is read or fetched
    if pooling not in _POOLINGS:
        raise ValueError(f"The `pooling` argument should be one of {_POOLINGS}. Received: pooling={pooling!r}")
    if weights is not None and include_top and classifier_activation not in (None, "softmax"):
        raise ValueError(
            "Only `None` and `softmax` activations are allowed for the `classifier_activation` argument when "
            f"using pretrained weights. Received: classifier_activation={classifier_activation!r}")
    if weights is None:
        pretrained, network = None, AlexNetSpec(num_classes=classes)
        image_size = _image_size(input_shape, default=224, include_top=include_top, fixed_with_top=False,
                                 weights=weights)
    else:
        pretrained, network = _read(weights_file(weights))
        if include_top and classes != network.num_classes:
            raise ValueError(
                f"If using `weights={weights!r}` with `include_top=True`, `classes` should be "
                f"{network.num_classes}. Received: classes={classes}")
        image_size = _image_size(input_shape, default=network.image_size, include_top=include_top,
                                 fixed_with_top=not network.adaptive_pool_size, weights=weights)
    model = build_alexnet(network.replace(image_size=image_size), name=name)
    if pretrained is not None:
        layers = WEIGHTED_LAYERS if include_top else WEIGHTED_LAYERS[:5]
        assign_weights(model, {layer: pretrained[layer] for layer in layers})
    if include_top:
        outputs = model.output
        if classifier_activation is not None:
            outputs = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(outputs)
        return keras.Model(model.input, outputs, name=name)
    features = model.get_layer("pool5").output
    if pooling == "avg":
        features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    elif pooling == "max":
        features = keras.layers.GlobalMaxPooling2D(name="max_pool")(features)
    return keras.Model(model.input, features, name=name)


def preprocess_input(x, weights=TORCHVISION, data_format=None):
    """RGB pixels in [0, 255] (channels last; numpy or a tensor) to what `AlexNet(weights=weights)`
    takes: torchvision: (x / 255 - mean) / std; bvlc_alexnet: BGR minus Caffe's mean pixel;
    None: RGB minus the ImageNet mean; a run directory: RGB minus its recorded mean. Returns
    float32 of the input's kind (numpy, a tensor, or a symbolic `keras.Input` inside a
    functional model)."""
    if data_format not in (None, "channels_last"):
        raise ValueError(f"Only channels_last input is supported. Received: data_format={data_format!r}")
    preprocessing = _preprocessing_of(weights)
    symbolic = isinstance(x, keras.KerasTensor)
    is_numpy = not symbolic and not hasattr(x, "numpy") and not keras.ops.is_tensor(x)
    x = np.asarray(x, np.float32) if is_numpy else keras.ops.cast(x, "float32")
    spec = _run_spec(weights)
    if spec is not None:  # the run's model takes RGB minus its mean (any std folded into conv1)
        return x - np.asarray(spec["rgb_mean"], np.float32)
    if preprocessing == conventions.TORCHVISION:
        mean, scale = np.asarray(torchvision.TORCHVISION_RGB_MEAN), 1.0 / (255.0 * np.asarray(torchvision.TORCHVISION_STD))
        return (x - mean.astype(np.float32)) * scale.astype(np.float32)
    if preprocessing == conventions.CAFFE:
        bgr = x[..., ::-1] if is_numpy else keras.ops.flip(x, axis=-1)
        return bgr - np.asarray(caffe.CAFFE_BGR_MEAN, np.float32)
    return x - np.asarray(constants.IMAGENET_RGB_MEAN, np.float32)


def load_image(path, weights=TORCHVISION, image_size=None):
    """float32 [S, S, 3] RGB 0-255: the crop of an image file that `weights` were measured on
    (torchvision: shorter side 256, centre 224; bvlc_alexnet: warp to 256x256, centre 227;
    None: the paper's centre 224/256 square). Feed it through `preprocess_input`."""
    import tensorflow as tf

    from pipelines import dataset as datasets

    preprocessing = _preprocessing_of(weights)
    spec = _run_spec(weights)
    from alexnet_tf import run_dir

    default_size = run_dir.network_of(spec).image_size if spec else (
        caffe.CAFFE_IMAGE_SIZE if preprocessing == conventions.CAFFE else 224)
    size = image_size or default_size
    with open(path, "rb") as f:
        encoded = f.read()
    try:
        pixels = datasets.decode_for_eval(tf.constant(encoded), image_size=size, preprocessing=preprocessing)
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(f"{path} is not a readable image ({error.message.splitlines()[0]}).") from None
    return pixels.numpy().astype(np.float32)


def decode_predictions(preds, top=5):
    """ImageNet predictions [N, 1000] to lists of the `top` (wnid, name, score), best first."""
    from pipelines import imagenet

    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != imagenet.NUM_CLASSES:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions (i.e. a 2D array of shape (samples, 1000)). "
            f"Received array with shape: {preds.shape}")
    wnids, names = imagenet.wnids(), imagenet.class_names()
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([(wnids[i], names[i], float(row[i])) for i in best])
    return results
