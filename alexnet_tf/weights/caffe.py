"""The released Caffe weights (bvlc_alexnet) in the project's own network, and back.

The community's `bvlc_alexnet.npy` (written by the caffe-tensorflow converter) is an .npy
file holding one pickled dict: 'conv1'..'conv5', 'fc6', 'fc7', 'fc8' -> [kernel, bias], conv
kernels [kh, kw, in_channels_per_group, out], fc kernels [in, out] with fc6's rows in the
(h, w, c) order of pool5. The network is Caffe's bvlc_alexnet deploy net, which is
`build_alexnet` with three options:

- input 227x227 with no padding before conv1 (`conv1_padding=(0, 0)`);
- Caffe's LRN: local_size 5, alpha 1e-4 DIVIDED BY 5, beta 0.75, k 1 (the paper has k 2);
- BGR input minus Caffe's ImageNet mean.

`load_caffe_npy` takes Caffe's input as is; `import_caffe_npy` folds the BGR order into
conv1's kernel, so the model takes the project's RGB input minus `CAFFE_RGB_MEAN`, which the
run directory records as its mean (the input pipeline and the export subtract it).

The file is a pickle, and unpickling can run code: `read_npy_weights` unpickles with an
allow-list of the numpy globals such a file needs, and refuses every other global by name.
"""

import os

import numpy as np
from numpy.lib import format as npy_format

from alexnet_tf.model.alexnet import WEIGHTED_LAYERS, build_alexnet
from alexnet_tf.model.spec import AlexNetSpec
from alexnet_tf.weights.errors import WeightsFileError
from alexnet_tf.weights.layer_weights import assign_weights
from alexnet_tf.weights.unpickling import AllowListUnpickler

LAYERS = WEIGHTED_LAYERS
CONV_LAYERS = LAYERS[:5]

# Caffe's bvlc_alexnet deploy.prototxt: 227-px input, no padding before conv1; LRN with
# local_size 5, alpha 1e-4 (which Caffe divides by local_size), beta 0.75, k 1.
CAFFE_IMAGE_SIZE = 227
CAFFE_LRN_BIAS = 1.0
CAFFE_LRN_ALPHA = 1e-4 / 5
CAFFE_CONV1_PADDING = (0, 0)
# Per-channel mean of Caffe's ilsvrc_2012_mean.npy (the mean image the weights were trained
# with), BGR, 0-255.
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
CAFFE_RGB_MEAN = CAFFE_BGR_MEAN[::-1]
# Caffe's bvlc_alexnet, single centre crop, ILSVRC-2012 validation (its model card).
PUBLISHED_TOP1_ACCURACY = 0.571
PUBLISHED_TOP5_ACCURACY = 0.802

_KERNEL_SIZES = {"conv1": 11, "conv2": 5, "conv3": 3, "conv4": 3, "conv5": 3}
# pool5 of a 227-px input is 6x6: fc6 has 6 * 6 * conv5 rows.
_POOL5_SIDE = 6


class CaffeWeightsError(WeightsFileError):
    """A weights file that is not (or not safely) the bvlc_alexnet layout; the message says why."""


# ---------------------------------------------------------------------------------------
# Reading and writing the file without running its code


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover (numpy 1.x)
        from numpy.core import multiarray
    return multiarray


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as pickles of bytes use it (protocol 2), and only so."""
    if encoding.lower().replace("-", "") != "latin1":
        raise CaffeWeightsError(f"refused to encode with the codec {encoding!r} (only latin-1 is expected).")
    return text.encode("latin1", errors)


# Everything a pickled dict of numpy arrays refers to, under the names numpy 1 and 2 (and
# protocol 2, whose bytes go through _codecs.encode) write. Nothing else is loaded.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_multiarray()._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_multiarray()._reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_multiarray().scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_multiarray().scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


def _unpickler(file, path):
    # latin1: how numpy reads the byte strings of arrays pickled by Python 2.
    return AllowListUnpickler(file, path=path, allowed=_ALLOWED_GLOBALS, error=CaffeWeightsError,
                              holds="numpy arrays in dicts and lists", encoding="latin1")


def _skip_npy_header(path, f):
    """Moves `f` past the header of an .npy file of one object (np.save of a dict) to its
    pickle; a file without the .npy magic is taken as a plain pickle, from its start."""
    if f.read(len(npy_format.MAGIC_PREFIX)) != npy_format.MAGIC_PREFIX:
        f.seek(0)
        return
    f.seek(0)
    try:
        version = npy_format.read_magic(f)
        read_header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"version {version[0]}.{version[1]}, where 1.0 or 2.0 was expected")
        shape, _, dtype = read_header(f)
    except ValueError as error:
        raise CaffeWeightsError(f"{path}: unreadable .npy header ({error}).") from error
    if dtype != np.dtype(object):
        raise CaffeWeightsError(
            f"{path}: expected an .npy file holding one dict of layers (dtype object). Received: "
            f"dtype {dtype.str!r} and shape {shape}.")


def read_npy_weights(path):
    """{layer name: (kernel, bias)} of a bvlc_alexnet-layout file, float32, without running code.

    Raises:
      CaffeWeightsError: the file asks for anything but numpy arrays in dicts and lists (the
        refused global is named), or does not hold a dict of [kernel, bias] layers.
    """
    with open(path, "rb") as f:
        _skip_npy_header(path, f)
        try:
            loaded = _unpickler(f, path).load()
        except CaffeWeightsError as error:
            raise CaffeWeightsError(str(error) if str(error).startswith(str(path)) else f"{path}: {error}") from None
        except Exception as error:  # a truncated or foreign file: say which and why
            raise CaffeWeightsError(
                f"{path}: not a readable weights file ({type(error).__name__}: {error}).") from error
    if isinstance(loaded, np.ndarray) and loaded.dtype == object and loaded.shape == ():
        loaded = loaded.item()
    if not isinstance(loaded, dict):
        raise CaffeWeightsError(f"{path}: expected a dict of layers. Received a {type(loaded).__name__}.")
    weights = {}
    for key, value in loaded.items():
        name = key.decode("latin1") if isinstance(key, bytes) else str(key)
        if isinstance(value, dict):  # newer caffe-tensorflow: {'weights': ..., 'biases': ...}
            value = [value.get("weights", value.get(b"weights")), value.get("biases", value.get(b"biases"))]
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise CaffeWeightsError(f"{path}: layer {name} should be [kernel, bias]. Received: {type(value).__name__}.")
        arrays = []
        for part, array in zip(("kernel", "bias"), value):
            if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
                raise CaffeWeightsError(f"{path}: the {part} of layer {name} is not a float array.")
            arrays.append(np.asarray(array, np.float32))
        weights[name] = tuple(arrays)
    return weights


def write_npy_weights(path, weights):
    """Writes {layer: (kernel, bias)} as a bvlc_alexnet-layout .npy, atomically."""
    layers = {name: [np.asarray(kernel, np.float32), np.asarray(bias, np.float32)]
              for name, (kernel, bias) in weights.items()}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.array(layers, dtype=object), allow_pickle=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------------------
# The network of a file


def network_of_weights(weights, *, path="weights"):
    """The `AlexNetSpec` of Caffe's network for these weights (widths read off the
    file, so narrower variants load too); CaffeWeightsError names a missing layer or a
    shape that does not fit, with the expected and the found shape."""
    missing = [name for name in LAYERS if name not in weights]
    if missing:
        raise CaffeWeightsError(
            f"{path}: missing layer(s) {', '.join(missing)}. Expected {', '.join(LAYERS)}; found "
            f"{', '.join(sorted(weights)) or 'none'}.")
    filters = [weights[name][0].shape[-1] for name in CONV_LAYERS]
    conv2_inputs = weights["conv2"][0].shape[2] if weights["conv2"][0].ndim == 4 else 0
    groups = filters[0] // conv2_inputs if conv2_inputs and filters[0] % conv2_inputs == 0 else 2
    fc_units = weights["fc6"][0].shape[-1]
    num_classes = weights["fc8"][0].shape[-1]
    inputs = {"conv1": 3, "conv2": filters[0] // groups, "conv3": filters[1],
              "conv4": filters[2] // groups, "conv5": filters[3] // groups}
    expected = {name: (_KERNEL_SIZES[name], _KERNEL_SIZES[name], inputs[name], filters[i])
                for i, name in enumerate(CONV_LAYERS)}
    expected.update(fc6=(_POOL5_SIDE * _POOL5_SIDE * filters[4], fc_units), fc7=(fc_units, fc_units),
                    fc8=(fc_units, num_classes))
    for name in LAYERS:
        kernel, bias = weights[name]
        if kernel.shape != expected[name]:
            raise CaffeWeightsError(
                f"{path}: layer {name} has a kernel of shape {kernel.shape}; expected "
                f"{expected[name]} (bvlc_alexnet layout, groups={groups}, 227-px input).")
        if bias.shape != (expected[name][-1],):
            raise CaffeWeightsError(
                f"{path}: layer {name} has a bias of shape {bias.shape}; expected ({expected[name][-1]},).")
    return AlexNetSpec(num_classes=int(num_classes), image_size=CAFFE_IMAGE_SIZE, groups=int(groups),
                       conv_filters=tuple(int(f) for f in filters), fc_units=int(fc_units),
                       lrn_bias=CAFFE_LRN_BIAS, lrn_alpha=CAFFE_LRN_ALPHA, conv1_padding=CAFFE_CONV1_PADDING)


def _swap_color_order(weights):
    """The same weights for input channels in the other order (BGR <-> RGB): conv1's kernel
    reversed along its input axis."""
    swapped = dict(weights)
    kernel, bias = weights["conv1"]
    swapped["conv1"] = (np.ascontiguousarray(kernel[:, :, ::-1, :]), bias)
    return swapped


def load_caffe_npy(path):
    """The released bvlc_alexnet weights in the project's `build_alexnet`, as Caffe runs them.

    Args:
      path: a caffe-tensorflow `.npy` ('conv1'..'fc8' -> [kernel, bias]). Loaded without
        running any pickled code.

    Returns:
      A `keras.Model` taking Caffe's input as is (float32 [N, 227, 227, 3], BGR, minus
      `CAFFE_BGR_MEAN`) and returning fc8 logits equal to Caffe's forward pass.

    Raises:
      CaffeWeightsError: a refused global, a missing layer or a shape that does not fit.
    """
    weights = read_npy_weights(path)
    model = build_alexnet(network_of_weights(weights, path=path), name="bvlc_alexnet")
    assign_weights(model, weights)
    return model


def import_caffe_npy(path):
    """(model, its `AlexNetSpec`) of a bvlc_alexnet file for the
    project's RGB input: the model takes RGB images minus `CAFFE_RGB_MEAN` and computes what
    Caffe computes on the same images in BGR."""
    weights = read_npy_weights(path)
    network = network_of_weights(weights, path=path)
    model = build_alexnet(network)
    assign_weights(model, _swap_color_order(weights))
    return model, network


def caffe_weights_of(model):
    """{layer: (kernel, bias)} of a project (RGB-input) model in the bvlc_alexnet layout,
    conv1's kernel back in Caffe's BGR order; `import_caffe_npy` reads it back exactly."""
    weights = {name: (model.get_layer(name).kernel.numpy(), model.get_layer(name).bias.numpy())
               for name in LAYERS}
    return _swap_color_order(weights)


def export_npy(model, network, path, *, overwrite=False):
    """Writes a run's weights to `path` in the bvlc_alexnet layout. Returns what keeps Caffe's
    network from computing the run's function with them (`differences_from_caffe`).

    Raises:
      FileExistsError: `path` exists and `overwrite` is False.
    """
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists. Pass --overwrite to replace it, or another --output.")
    write_npy_weights(path, caffe_weights_of(model))
    return differences_from_caffe(network)


def differences_from_caffe(network):
    """What keeps Caffe's network from computing the function of `network` (an
    `AlexNetSpec`) with its weights (empty: nothing)."""
    expected = dict(image_size=CAFFE_IMAGE_SIZE, lrn=True, lrn_bias=CAFFE_LRN_BIAS, lrn_alpha=CAFFE_LRN_ALPHA,
                    conv1_padding=CAFFE_CONV1_PADDING, pool_size=3)
    if network.activation != "relu":
        return [f"activation={network.activation!r} (Caffe: 'relu')"] + differences_from_caffe(network.replace(
            activation="relu"))
    return [f"{key}={getattr(network, key)!r} (Caffe: {value!r})" for key, value in expected.items()
            if not np.allclose(getattr(network, key), value, rtol=1e-6, atol=0)]
