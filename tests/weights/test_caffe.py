"""The bvlc_alexnet weights: exact against an independent NumPy model of Caffe, and safe to load."""

import codecs
import io
import os
import pickle
import pickletools
import struct

import numpy as np
import pytest

import alexnet_tf
from alexnet_tf.weights import caffe
from tests.weights.caffe_reference import (TINY_FILTERS, caffe_forward, caffe_input, random_caffe_blobs,
                             to_caffe_tensorflow_layout, write_caffe_file)



def test_load_caffe_npy_equals_caffes_forward_pass(tmp_path):
    blobs = write_caffe_file(tmp_path / "bvlc_alexnet.npy")
    model = alexnet_tf.load_caffe_npy(str(tmp_path / "bvlc_alexnet.npy"))
    assert model.input.shape[1:] == (227, 227, 3)
    assert model.get_layer("conv2").kernel.shape == (5, 5, 4, 16)
    _, nhwc, nchw = caffe_input()
    expected = caffe_forward(blobs, nchw)
    logits = model(nhwc, training=False).numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(logits, expected, atol=2e-4 * scale, rtol=1e-4)
    # The test sees the LRN's constants: the paper's k = 2 gives other logits.
    assert np.abs(caffe_forward(blobs, nchw, lrn_k=2.0) - expected).max() > 0.05 * scale


@pytest.mark.slow
def test_full_size_bvlc_alexnet_loads_exactly(tmp_path):
    blobs = write_caffe_file(tmp_path / "full.npy", filters=(96, 256, 384, 384, 256), fc_units=4096,
                             num_classes=1000)
    model = caffe.load_caffe_npy(str(tmp_path / "full.npy"))
    assert model.count_params() == 60_965_224
    _, nhwc, nchw = caffe_input(batch=1)
    expected = caffe_forward(blobs, nchw)
    np.testing.assert_allclose(model(nhwc, training=False).numpy(), expected,
                               atol=2e-4 * np.abs(expected).max(), rtol=1e-4)


def test_imported_model_takes_rgb_minus_the_recorded_mean(tmp_path):
    blobs = write_caffe_file(tmp_path / "w.npy")
    model, network = caffe.import_caffe_npy(str(tmp_path / "w.npy"))
    assert network.lrn_bias == 1.0 and network.lrn_alpha == pytest.approx(2e-5)
    bgr, _, nchw = caffe_input()
    rgb = bgr[..., ::-1] - np.asarray(caffe.CAFFE_RGB_MEAN, np.float32)
    expected = caffe_forward(blobs, nchw)
    np.testing.assert_allclose(model(rgb, training=False).numpy(), expected,
                               atol=2e-4 * np.abs(expected).max(), rtol=1e-4)


def test_weights_round_trip_through_the_npy_layout(tmp_path):
    write_caffe_file(tmp_path / "w.npy")
    original = caffe.read_npy_weights(str(tmp_path / "w.npy"))
    model, _ = caffe.import_caffe_npy(str(tmp_path / "w.npy"))
    caffe.write_npy_weights(str(tmp_path / "again.npy"), caffe.caffe_weights_of(model))
    again = caffe.read_npy_weights(str(tmp_path / "again.npy"))
    assert sorted(again) == sorted(original) == sorted(caffe.LAYERS)
    for name in caffe.LAYERS:
        for part in (0, 1):
            np.testing.assert_array_equal(again[name][part], original[name][part], err_msg=name)


def test_python2_style_pickle_and_dict_layers_load(tmp_path):
    # Protocol 2 with byte-string keys (as Python 2 wrote the released file) and the newer
    # converter's {'weights', 'biases'} layers.
    layers = {name.encode(): {"weights": w, "biases": b}
              for name, (w, b) in to_caffe_tensorflow_layout(random_caffe_blobs()).items()}
    path = tmp_path / "old.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array(layers, dtype=object), f, protocol=2)
    weights = caffe.read_npy_weights(str(path))
    np.testing.assert_array_equal(weights["fc8"][0], layers[b"fc8"]["weights"])
    assert caffe.network_of_weights(weights).conv_filters == TINY_FILTERS


class _Python2Pickler(pickle._Pickler):
    """Writes every str and bytes as a Python 2 `str` (BINSTRING), as Python 2 pickled the
    released file; with numpy 1's module name below, its pickle is that file's kind."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_python2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_python2_str
    dispatch[bytes] = _save_python2_str


def test_a_python2_numpy1_file_loads(tmp_path):
    layers = {name: [w, b] for name, (w, b) in to_caffe_tensorflow_layout(random_caffe_blobs()).items()}
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(np.array(layers, dtype=object))
    data = buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    opcodes = {op.name for op, _, _ in pickletools.genops(data)}
    assert "BINSTRING" in opcodes and not opcodes & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES"}
    assert "numpy.core.multiarray _reconstruct" in [arg for op, arg, _ in pickletools.genops(data)
                                                    if op.name == "GLOBAL"]
    path = tmp_path / "python2.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(data)
    weights = caffe.read_npy_weights(str(path))
    for name in caffe.LAYERS:
        np.testing.assert_array_equal(weights[name][0], layers[name][0], err_msg=name)
        np.testing.assert_array_equal(weights[name][1], layers[name][1], err_msg=name)


class _RunsACommand:
    """Unpickling this would run `touch MARKER` (what a hostile weights file would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Encodes:
    """Unpickling this calls codecs.encode with a codec numpy never uses."""

    def __reduce__(self):
        return (codecs.encode, ("payload", "rot13"))


def test_a_file_whose_unpickling_runs_a_command_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    layers = to_caffe_tensorflow_layout(random_caffe_blobs())
    layers["conv1"] = [_RunsACommand(marker), layers["conv1"][1]]
    path = tmp_path / "hostile.npy"
    with open(path, "wb") as f:
        np.save(f, np.array(layers, dtype=object), allow_pickle=True)
    # The file is what it claims: numpy's own unrestricted loader would run the command.
    assert b"system" in path.read_bytes()
    with pytest.raises(caffe.CaffeWeightsError, match=r"hostile\.npy.*refused to load the global '(posix|os)\.system'"):
        caffe.read_npy_weights(str(path))
    with pytest.raises(caffe.CaffeWeightsError):
        caffe.load_caffe_npy(str(path))
    assert not marker.exists()
    # A plain pickle (no .npy header) is refused the same way.
    plain = tmp_path / "hostile.pkl"
    plain.write_bytes(pickle.dumps({"conv1": [_RunsACommand(marker)]}))
    with pytest.raises(caffe.CaffeWeightsError, match="refused"):
        caffe.read_npy_weights(str(plain))
    assert not marker.exists()
    # The one stdlib function allowed (how protocol 2 stores bytes) only as numpy uses it.
    plain.write_bytes(pickle.dumps({"conv1": [_Encodes()]}, protocol=2))
    with pytest.raises(caffe.CaffeWeightsError, match=r"hostile\.pkl: refused to encode with the codec 'rot13'"):
        caffe.read_npy_weights(str(plain))


def test_missing_layers_and_wrong_shapes_are_named(tmp_path):
    weights = to_caffe_tensorflow_layout(random_caffe_blobs())
    without_fc7 = {k: v for k, v in weights.items() if k != "fc7"}
    with pytest.raises(caffe.CaffeWeightsError, match="missing layer.*fc7"):
        caffe.network_of_weights(without_fc7)
    wrong = dict(weights, conv3=(np.zeros((3, 3, 15, 12), np.float32), weights["conv3"][1]))
    with pytest.raises(caffe.CaffeWeightsError, match=r"conv3 has a kernel of shape \(3, 3, 15, 12\); expected \(3, 3, 16, 12\)"):
        caffe.network_of_weights(wrong)
    np.save(tmp_path / "floats.npy", np.zeros(3))
    with pytest.raises(caffe.CaffeWeightsError, match="floats.npy.*dtype '<f8'"):
        caffe.read_npy_weights(str(tmp_path / "floats.npy"))
    # A valid header for one object, then seven bytes that are no pickle.
    with open(tmp_path / "junk.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(b"\x00" * 7)
    with pytest.raises(caffe.CaffeWeightsError, match="junk.npy: not a readable weights file"):
        caffe.read_npy_weights(str(tmp_path / "junk.npy"))
