"""Writes files in torch.save's zip layout without PyTorch, for the reader's edge cases
(strides, offsets, hostile pickles). The real thing is tests/fixtures/*.pth, written by
PyTorch itself (tests/fixtures/make_fixtures.py)."""

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile

import numpy as np


@contextlib.contextmanager
def _torch_names():
    """Stand-ins importable as torch.FloatStorage and torch._utils._rebuild_tensor_v2 while
    pickling (pickle writes a global by its module and name)."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = FloatStorage, _rebuild_tensor_v2, utils
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield FloatStorage, _rebuild_tensor_v2
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class Tensor:
    """A tensor of `storage` (a float32 array, stored whole) viewed at offset/size/stride."""

    def __init__(self, storage, offset=0, size=None, stride=None):
        self.storage = np.ascontiguousarray(storage, np.float32).ravel()
        self.offset = offset
        self.size = tuple(np.shape(storage)) if size is None else tuple(size)
        if stride is None:
            stride = tuple(int(s // 4) for s in np.ascontiguousarray(storage, np.float32).strides)
        self.stride = tuple(stride)


def write_pth(path, state, *, root="archive", extra_objects=None):
    """Writes {key: Tensor or array} like torch.save (data.pkl + data/<key> + version)."""
    storages = {}
    with _torch_names() as (storage_type, rebuild):

        class _Storage:
            def __init__(self, key, array):
                self.key, self.array = key, array

        class _Reduced:
            def __init__(self, tensor, storage):
                self.tensor, self.storage = tensor, storage

            def __reduce__(self):
                t = self.tensor
                return (rebuild, (self.storage, t.offset, t.size, t.stride, False, collections.OrderedDict()))

        class _Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, _Storage):
                    return ("storage", storage_type, obj.key, "cpu", obj.array.size)
                return None

        payload = collections.OrderedDict()
        for key, value in state.items():
            tensor = value if isinstance(value, Tensor) else Tensor(value)
            storage = _Storage(str(len(storages)), tensor.storage)
            storages[storage.key] = tensor.storage
            payload[key] = _Reduced(tensor, storage)
        payload.update(extra_objects or {})
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=2).dump(payload)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{root}/data.pkl", buffer.getvalue())
        archive.writestr(f"{root}/byteorder", "little")
        for key, array in storages.items():
            archive.writestr(f"{root}/data/{key}", array.astype("<f4").tobytes())
        archive.writestr(f"{root}/version", "3\n")
    return str(path)


def replace_member(source, target, member_suffix, data):
    """A copy of the zip `source` with the member ending in `member_suffix` replaced by `data`."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for info in original.infolist():
            copy.writestr(info, data if info.filename.endswith(member_suffix) else original.read(info))
    return str(target)
