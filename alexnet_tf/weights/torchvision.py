"""torchvision's AlexNet weights (`alexnet-owt-7be5be79.pth`) in the project's network,
read without PyTorch and without running pickled code.

A `.pth` written by `torch.save` (PyTorch >= 1.6) is a zip: `<root>/data.pkl` pickles the
state_dict, each tensor a `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)` whose storage is a persistent id `('storage', torch.FloatStorage, key, location,
numel)` naming the raw little-endian bytes in `<root>/data/<key>`. `read_pth_state_dict`
unpickles with an allow-list of exactly those globals (plus `collections.OrderedDict`), each
mapped to a numpy stand-in; any other global is refused by name, so a crafted file runs no
code.

torchvision's network is `build_alexnet` with these options (`TORCHVISION_BUILD_KWARGS`):
conv 64-192-384-256-256 in one tower, conv1 padded by 2 on every side, no LRN, the adaptive
6x6 average pool after pool5, dropout on the inputs of fc6 and fc7. Its layers map to ours
in order (features.0/3/6/8/10 -> conv1..conv5, classifier.1/4/6 -> fc6..fc8); PyTorch's
[out, in, kh, kw] kernels become [kh, kw, in, out], and fc6's 9216 inputs are reordered
from PyTorch's (C, H, W) flattening to ours (H, W, C).

`load_torchvision_pth` takes torchvision's own input, (x / 255 - mean) / std. For a run
directory, `import_torchvision_pth` folds the 1/255 and 1/std into conv1's kernel, so the
model takes the project's input (RGB 0-255 minus `TORCHVISION_RGB_MEAN`) and computes the
same logits: conv1 is linear and its zero padding is zero in both.
"""

import collections
import io
import pickle
import zipfile

import numpy as np

from alexnet_tf.model.alexnet import WEIGHTED_LAYERS, build_alexnet
from alexnet_tf.model.spec import AlexNetSpec
from alexnet_tf.weights.layer_weights import assign_weights
from alexnet_tf.weights.errors import WeightsFileError
from alexnet_tf.weights.unpickling import AllowListUnpickler

# torchvision.models.AlexNet: the state_dict key prefix of each of our layers.
TORCHVISION_LAYER_KEYS = {
    "conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
    "conv5": "features.10", "fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6",
}
TORCHVISION_IMAGE_SIZE = 224
TORCHVISION_POOL_SIZE = 6
TORCHVISION_CONV1_PADDING = (2, 2)
TORCHVISION_DROPOUT_INPUTS_OF = ("fc6", "fc7")
# transforms.Normalize of AlexNet_Weights.IMAGENET1K_V1, on RGB in [0, 1].
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
TORCHVISION_RGB_MEAN = tuple(255.0 * m for m in TORCHVISION_MEAN)
# AlexNet_Weights.IMAGENET1K_V1's published figures (ILSVRC-2012 validation, centre crop).
PUBLISHED_TOP1_ACCURACY = 0.56522
PUBLISHED_TOP5_ACCURACY = 0.79066

_KERNEL_SIZES = {"conv1": 11, "conv2": 5, "conv3": 3, "conv4": 3, "conv5": 3}
_ZIP_MAGIC = b"PK\x03\x04"
# The legacy (PyTorch < 1.6) format starts with a pickled magic number.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class TorchvisionWeightsError(WeightsFileError):
    """A weights file that is not (or not safely) a torchvision AlexNet state_dict; the
    message says why."""


def is_pth(path):
    """Whether `path` looks like a `torch.save` file (a zip) by its first bytes."""
    with open(path, "rb") as f:
        return f.read(4) == _ZIP_MAGIC


# ---------------------------------------------------------------------------------------
# Reading the file without running its code


def _bfloat16_to_float32(raw, byteorder):
    bits = np.frombuffer(raw, "<u2" if byteorder == "little" else ">u2")
    return (bits.astype(np.uint32) << 16).view(np.float32)


# torch.<Name>Storage -> how its raw little-endian bytes become a numpy array.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
    "BFloat16Storage": None,  # numpy has no bfloat16: widened to float32
}


class _StorageType:
    """Stands for a `torch.<Name>Storage` class in the pickle: only its name is used."""

    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """`torch._utils._rebuild_tensor_v2` for numpy: the strided view of a storage, copied."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if storage_offset < 0 or any(s < 0 for s in size + stride):
        raise TorchvisionWeightsError(f"a tensor with a negative offset, size or stride ({size}, {stride})")
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else storage_offset - 1
    if last >= storage.size:
        raise TorchvisionWeightsError(
            f"a tensor of size {size} and stride {stride} reaches past its storage of {storage.size} elements")
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=size,
                                           strides=tuple(s * storage.itemsize for s in stride), writeable=False)
    return np.array(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


# Everything a state_dict of tensors refers to. Nothing else is loaded.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _StateDictUnpickler(AllowListUnpickler):
    """The allow-list unpickler, plus the storages a state_dict's tensors name."""

    def __init__(self, file, *, path, archive, root, byteorder):
        super().__init__(file, path=path, allowed=_ALLOWED_GLOBALS, error=TorchvisionWeightsError,
                         holds="tensors in a state_dict")
        self._archive, self._root, self._byteorder = archive, root, byteorder
        self._storages = {}

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise TorchvisionWeightsError(f"{self._path}: refused the persistent reference {pid!r} in data.pkl.")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            name = f"{self._root}/data/{key}"
            try:
                raw = self._archive.read(name)
            except KeyError:
                raise TorchvisionWeightsError(f"{self._path}: data.pkl names the storage {name}, which the zip lacks.")
            dtype = _STORAGE_DTYPES[storage_type.name]
            if dtype is None:
                array = _bfloat16_to_float32(raw, self._byteorder)
            else:
                array = np.frombuffer(raw, dtype if self._byteorder == "little" else dtype.newbyteorder(">"))
            if array.size != int(numel):
                raise TorchvisionWeightsError(
                    f"{self._path}: storage {name} holds {array.size} elements; data.pkl says {numel}.")
            self._storages[key] = array
        return self._storages[key]


def _archive_root(path, archive):
    roots = {name.split("/", 1)[0] for name in archive.namelist() if name.endswith("/data.pkl")
             and name.count("/") == 1}
    if len(roots) != 1:
        raise TorchvisionWeightsError(
            f"{path}: not a torch.save zip (expected one <root>/data.pkl; found {len(roots)}).")
    return roots.pop()


def read_pth_state_dict(path):
    """{key: float32 numpy array} of a `torch.save`d state_dict, without PyTorch and
    without running any pickled code.

    Raises:
      TorchvisionWeightsError: a refused global (named), the legacy pre-1.6 format, or a
        file that is not a state_dict of tensors.
    """
    with open(path, "rb") as f:
        head = f.read(16)
    if not head.startswith(_ZIP_MAGIC):
        legacy = False
        try:  # the legacy format's first pickle is one integer: safe to read with no globals at all
            legacy = AllowListUnpickler(io.BytesIO(open(path, "rb").read(64)), path=path, allowed={},
                                        error=TorchvisionWeightsError, holds="tensors").load() == _LEGACY_MAGIC
        except Exception:
            pass
        raise TorchvisionWeightsError(
            f"{path}: " + ("written in PyTorch's legacy (< 1.6) format, which this reader does not take. "
                           "Re-save it with torch.save from PyTorch >= 1.6." if legacy else
                           "not a torch.save file (no zip header)."))
    try:
        with zipfile.ZipFile(path) as archive:
            root = _archive_root(path, archive)
            names = set(archive.namelist())
            byteorder = (archive.read(f"{root}/byteorder").decode().strip()
                         if f"{root}/byteorder" in names else "little")
            if byteorder not in ("little", "big"):
                raise TorchvisionWeightsError(f"{path}: unknown byte order {byteorder!r}.")
            with archive.open(f"{root}/data.pkl") as pickled:
                loaded = _StateDictUnpickler(io.BytesIO(pickled.read()), path=path, archive=archive, root=root,
                                             byteorder=byteorder).load()
    except TorchvisionWeightsError as error:
        message = str(error)
        raise TorchvisionWeightsError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise TorchvisionWeightsError(f"{path}: not a readable torch.save file ({type(error).__name__}: {error}).") \
            from error
    if not isinstance(loaded, dict):
        raise TorchvisionWeightsError(f"{path}: expected a state_dict. Received a {type(loaded).__name__}.")
    state = {}
    for key, value in loaded.items():
        if not isinstance(value, np.ndarray):
            raise TorchvisionWeightsError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor.")
        state[str(key)] = value
    return state


# ---------------------------------------------------------------------------------------
# The network of a state_dict


def weights_of_state_dict(state, *, path="weights"):
    """{layer: (kernel, bias)} in the project's layout, and the `AlexNetSpec` of
    torchvision's network with these widths. TorchvisionWeightsError names a missing key or
    a shape that does not fit, with the expected and the found shape."""
    prefix = "module." if all(key.startswith("module.") for key in state) else ""  # saved from DataParallel
    missing = [f"{prefix}{TORCHVISION_LAYER_KEYS[name]}.{part}" for name in WEIGHTED_LAYERS
               for part in ("weight", "bias") if f"{prefix}{TORCHVISION_LAYER_KEYS[name]}.{part}" not in state]
    if missing:
        raise TorchvisionWeightsError(
            f"{path}: missing {', '.join(missing)}: not torchvision's AlexNet state_dict "
            f"(found {', '.join(sorted(state)[:10]) or 'nothing'}).")
    raw = {name: (state[f"{prefix}{TORCHVISION_LAYER_KEYS[name]}.weight"],
                  state[f"{prefix}{TORCHVISION_LAYER_KEYS[name]}.bias"]) for name in WEIGHTED_LAYERS}
    filters = [raw[name][0].shape[0] for name in WEIGHTED_LAYERS[:5]]
    fc_units, num_classes = raw["fc6"][0].shape[0], raw["fc8"][0].shape[0]
    side = TORCHVISION_POOL_SIZE
    inputs = [3] + filters[:4]
    expected = {name: (filters[i], inputs[i], _KERNEL_SIZES[name], _KERNEL_SIZES[name])
                for i, name in enumerate(WEIGHTED_LAYERS[:5])}
    expected.update(fc6=(fc_units, filters[4] * side * side), fc7=(fc_units, fc_units), fc8=(num_classes, fc_units))
    weights = {}
    for name in WEIGHTED_LAYERS:
        kernel, bias = raw[name]
        key = f"{prefix}{TORCHVISION_LAYER_KEYS[name]}"
        if kernel.shape != expected[name]:
            raise TorchvisionWeightsError(
                f"{path}: {key}.weight has shape {kernel.shape}; expected {expected[name]} (torchvision's AlexNet).")
        if bias.shape != (expected[name][0],):
            raise TorchvisionWeightsError(f"{path}: {key}.bias has shape {bias.shape}; expected ({expected[name][0]},).")
        kernel = np.asarray(kernel, np.float32)
        if name == "fc6":  # [out, C*H*W] -> rows in our (H, W, C) flattening
            kernel = kernel.reshape(fc_units, filters[4], side, side).transpose(2, 3, 1, 0).reshape(-1, fc_units)
        elif kernel.ndim == 4:  # [out, in, kh, kw] -> [kh, kw, in, out]
            kernel = kernel.transpose(2, 3, 1, 0)
        else:
            kernel = kernel.T
        weights[name] = (np.ascontiguousarray(kernel), np.asarray(bias, np.float32))
    network = AlexNetSpec(num_classes=int(num_classes), image_size=TORCHVISION_IMAGE_SIZE, groups=1, lrn=False,
                          conv1_padding=TORCHVISION_CONV1_PADDING, conv_filters=tuple(int(f) for f in filters),
                          fc_units=int(fc_units), dropout_inputs_of=TORCHVISION_DROPOUT_INPUTS_OF,
                          adaptive_pool_size=TORCHVISION_POOL_SIZE)
    return weights, network


def load_torchvision_pth(path, *, image_size=TORCHVISION_IMAGE_SIZE):
    """torchvision's AlexNet weights in the project's `build_alexnet`, as PyTorch runs them.

    Args:
      path: a `torch.save`d state_dict of `torchvision.models.AlexNet` (e.g.
        `alexnet-owt-7be5be79.pth`). Read without PyTorch and without running pickled code.
      image_size: the input side (torchvision's 224; the adaptive pool takes any side >= 63).

    Returns:
      A `keras.Model` taking torchvision's input in NHWC (float32 [N, S, S, 3], RGB,
      (x / 255 - TORCHVISION_MEAN) / TORCHVISION_STD) and returning PyTorch's logits.

    Raises:
      TorchvisionWeightsError: a refused global, a missing key or a shape that does not fit.
    """
    weights, network = weights_of_state_dict(read_pth_state_dict(path), path=path)
    model = build_alexnet(network.replace(image_size=image_size), name="torchvision_alexnet")
    assign_weights(model, weights)
    return model


def _fold_normalization(weights):
    """The same weights for input x - 255 * mean (RGB, 0-255) instead of (x / 255 - mean) / std:
    conv1's kernel divided by 255 * std along its input channels."""
    folded = dict(weights)
    kernel, bias = weights["conv1"]
    scale = 1.0 / (255.0 * np.asarray(TORCHVISION_STD, np.float64))
    folded["conv1"] = ((kernel * scale[None, None, :, None]).astype(np.float32), bias)
    return folded


def import_torchvision_pth(path):
    """(model, its `AlexNetSpec`) of a torchvision .pth for the
    project's input: RGB 0-255 minus `TORCHVISION_RGB_MEAN` (the std folded into conv1)."""
    weights, network = weights_of_state_dict(read_pth_state_dict(path), path=path)
    model = build_alexnet(network)
    assign_weights(model, _fold_normalization(weights))
    return model, network
