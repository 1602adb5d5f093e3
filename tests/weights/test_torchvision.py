"""torchvision's AlexNet weights read without PyTorch (`alexnet_tf.weights.torchvision`),
against a file that PyTorch wrote and the logits PyTorch computed (tests/fixtures)."""

import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf import run_dir
from alexnet_tf.weights import importing, torchvision
from tests.commands import run_command
from pipelines import schema
from tests.weights.torch_zip import Tensor, replace_member, write_pth

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
TINY_PTH = os.path.join(FIXTURES, "tiny_torchvision_alexnet.pth")
MEAN = np.asarray(torchvision.TORCHVISION_MEAN, np.float32)
STD = np.asarray(torchvision.TORCHVISION_STD, np.float32)


@pytest.fixture(scope="module")
def reference():
    return np.load(os.path.join(FIXTURES, "reference.npz"))


def _torchvision_input(pixels):
    return (pixels.astype(np.float32) / 255.0 - MEAN) / STD


def _assert_logits_equal(actual, expected):
    # The issue's bar: equal to PyTorch's forward to 1e-4, relative to the logits' scale.
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_the_state_dict_pytorch_wrote_is_read_exactly():
    state = torchvision.read_pth_state_dict(TINY_PTH)
    assert list(state) == [f"{prefix}.{part}" for prefix in torchvision.TORCHVISION_LAYER_KEYS.values()
                           for part in ("weight", "bias")]
    assert state["features.0.weight"].shape == (8, 3, 11, 11) and state["features.0.weight"].dtype == np.float32
    assert state["classifier.1.weight"].shape == (32, 16 * 6 * 6)
    # The raw little-endian storage, untouched: the first value is the storage's first 4 bytes.
    with zipfile.ZipFile(TINY_PTH) as archive:
        raw = archive.read("tiny_torchvision_alexnet/data/0")
    np.testing.assert_array_equal(state["features.0.weight"].ravel(), np.frombuffer(raw, "<f4"))


def test_logits_equal_pytorchs_at_224_and_through_the_adaptive_pool(reference):
    model = alexnet_tf.load_torchvision_pth(TINY_PTH)
    assert [layer.name for layer in model.layers if layer.name.startswith(("drop", "norm", "avgpool"))] == \
        ["norm1", "norm2", "avgpool", "drop5", "drop6"]
    assert model.get_layer("conv2").groups == 1 and model.get_layer("conv1").kernel.shape == (11, 11, 3, 8)
    _assert_logits_equal(model(_torchvision_input(reference["torchvision_pixels"]), training=False).numpy(),
                         reference["torchvision_logits"])
    # 256 px: pool5 is 7x7 and PyTorch's adaptive pool averages overlapping 2x2 bins to 6x6.
    model_256 = torchvision.load_torchvision_pth(TINY_PTH, image_size=256)
    assert model_256.get_layer("pool5").output.shape[1:3] == (7, 7)
    _assert_logits_equal(model_256(_torchvision_input(reference["pixels_256"]), training=False).numpy(),
                         reference["logits_256"])


def test_fc6_rows_come_from_pytorchs_chw_order(reference):
    # Read in (H, W, C) order as if it were ours, fc6 computes another function: the reorder matters.
    weights, network = torchvision.weights_of_state_dict(torchvision.read_pth_state_dict(TINY_PTH))
    state = torchvision.read_pth_state_dict(TINY_PTH)
    naive = dict(weights, fc6=(np.ascontiguousarray(state["classifier.1.weight"].T), weights["fc6"][1]))
    model = alexnet_tf.build_alexnet(network)
    from alexnet_tf.weights import assign_weights

    assign_weights(model, naive)
    logits = model(_torchvision_input(reference["torchvision_pixels"]), training=False).numpy()
    assert np.abs(logits - reference["torchvision_logits"]).max() > 0.05 * np.abs(reference["torchvision_logits"]).max()


def test_the_import_folds_normalisation_into_conv1(reference):
    model, network = torchvision.import_torchvision_pth(TINY_PTH)
    assert network.adaptive_pool_size == 6 and network.dropout_inputs_of == ("fc6", "fc7")
    rgb_minus_mean = reference["torchvision_pixels"].astype(np.float32) - np.asarray(torchvision.TORCHVISION_RGB_MEAN,
                                                                                       np.float32)
    _assert_logits_equal(model(rgb_minus_mean, training=False).numpy(), reference["torchvision_logits"])


def test_strided_and_offset_tensors_are_rebuilt_like_torch(tmp_path):
    storage = np.arange(24, dtype=np.float32)
    path = write_pth(tmp_path / "strided.pth", {
        "transposed": Tensor(storage[:12].reshape(3, 4), size=(4, 3), stride=(1, 4)),
        "offset": Tensor(storage, offset=5, size=(2, 3), stride=(3, 1)),
        "scalar": Tensor(np.float32(7.0), size=(), stride=()),
    })
    state = torchvision.read_pth_state_dict(path)
    np.testing.assert_array_equal(state["transposed"], storage[:12].reshape(3, 4).T)
    np.testing.assert_array_equal(state["offset"], storage[5:11].reshape(2, 3))
    assert state["scalar"].shape == () and state["scalar"] == 7.0
    beyond = write_pth(tmp_path / "beyond.pth", {"w": Tensor(storage, offset=20, size=(2, 3), stride=(3, 1))})
    with pytest.raises(torchvision.TorchvisionWeightsError, match=r"beyond\.pth: a tensor of size \(2, 3\).*past its storage of 24"):
        torchvision.read_pth_state_dict(beyond)


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_file_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    hostile = replace_member(TINY_PTH, tmp_path / "hostile.pth", "data.pkl", pickle.dumps(_RunsACommand(marker)))
    with pytest.raises(torchvision.TorchvisionWeightsError,
                       match=r"hostile\.pth: refused to load the global '(posix|os)\.system'"):
        torchvision.read_pth_state_dict(hostile)
    with pytest.raises(torchvision.TorchvisionWeightsError):
        torchvision.load_torchvision_pth(hostile)
    assert not marker.exists()
    # Hidden among real tensors, and through each allowed door: still refused, still nothing run.
    inside = write_pth(tmp_path / "inside.pth", {"w": np.zeros(3, np.float32)}, extra_objects={"x": _RunsACommand(marker)})
    with pytest.raises(torchvision.TorchvisionWeightsError, match="refused to load the global"):
        torchvision.read_pth_state_dict(inside)
    assert not marker.exists()

    class _BadPid(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "FloatStorage", "0", "cpu", 1) if obj == "here" else None

    import io

    buffer = io.BytesIO()
    _BadPid(buffer, protocol=2).dump({"w": "here"})
    bad_pid = replace_member(TINY_PTH, tmp_path / "bad_pid.pth", "data.pkl", buffer.getvalue())
    with pytest.raises(torchvision.TorchvisionWeightsError, match=r"bad_pid\.pth: refused the persistent reference"):
        torchvision.read_pth_state_dict(bad_pid)


def test_foreign_and_damaged_files_are_named_with_the_reason(tmp_path):
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001))
    with pytest.raises(torchvision.TorchvisionWeightsError, match=r"legacy\.pth: written in PyTorch's legacy"):
        torchvision.read_pth_state_dict(str(legacy))
    short = replace_member(TINY_PTH, tmp_path / "short.pth", "data/0", b"\x00" * 16)
    with pytest.raises(torchvision.TorchvisionWeightsError, match=r"short\.pth: storage .*data/0 holds 4 elements; data.pkl says 2904"):
        torchvision.read_pth_state_dict(short)
    other = write_pth(tmp_path / "resnet.pth", {"conv1.weight": np.zeros((2, 3, 7, 7), np.float32)})
    with pytest.raises(torchvision.TorchvisionWeightsError, match=r"resnet\.pth: missing features\.0\.weight.*not torchvision's AlexNet"):
        torchvision.load_torchvision_pth(other)
    state = torchvision.read_pth_state_dict(TINY_PTH)
    state["features.6.weight"] = np.zeros((16, 15, 3, 3), np.float32)
    with pytest.raises(torchvision.TorchvisionWeightsError,
                       match=r"features\.6\.weight has shape \(16, 15, 3, 3\); expected \(16, 16, 3, 3\)"):
        torchvision.weights_of_state_dict(state)


def test_import_weights_tells_the_format_by_content_and_writes_a_run(tmp_path, reference):
    model_dir = tmp_path / "torchvision_run"
    result = run_command("alexnet_tf.import_weights", f"--weights={TINY_PTH}", f"--model_dir={model_dir}")
    assert "Imported" in result.stdout
    spec = run_dir.read_model_spec(str(model_dir))
    assert spec["preprocessing"] == "torchvision"
    assert spec["rgb_mean"] == pytest.approx(torchvision.TORCHVISION_RGB_MEAN)
    assert spec[importing.IMPORTED_FROM]["format"].startswith("torchvision")
    assert spec["build_alexnet"]["adaptive_pool_size"] == 6 and spec["build_alexnet"]["groups"] == 1
    flags_text = (model_dir / "flags.txt").read_text()
    assert "--groups=1" in flags_text and "--lrn=false" in flags_text and "--conv_filters=8,16,16,16,16" in flags_text
    model, spec, _ = run_dir.load_model(str(model_dir))
    pixels = reference["torchvision_pixels"].astype(np.float32) - np.asarray(spec["rgb_mean"], np.float32)
    _assert_logits_equal(model(pixels, training=False).numpy(), reference["torchvision_logits"])
    # alexnet_tf.evaluate crops as torchvision does: the photos, labelled with PyTorch's top-1.
    shard = tmp_path / "validation-00000-of-00001"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for name, label in zip(reference["photos"], reference["torchvision_logits"].argmax(axis=1)):
            with open(os.path.join(FIXTURES, "photos", str(name)), "rb") as f:
                writer.write(schema.make_example(encoded=f.read(), height=1, width=1, label=int(label),
                                                 synset=f"c{label}", text="", filename=str(name)))
    run_command("alexnet_tf.evaluate", f"--model_dir={model_dir}", f"--eval_files={shard}",
                f"--output_json={tmp_path / 'eval.json'}")
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["num_examples"] == 3 and results["top1_error"] == 0.0
    # alexnet_tf.predict: the same crop, the same top-1.
    photo = os.path.join(FIXTURES, "photos", str(reference["photos"][0]))
    lines = run_command("alexnet_tf.predict", f"--model_dir={model_dir}", photo).stdout.strip().splitlines()
    assert lines[0] == photo and lines[1].split()[2] == str(reference["torchvision_logits"][0].argmax())
    # A refused file leaves no run directory behind.
    bad = replace_member(TINY_PTH, tmp_path / "hostile.pth", "data.pkl", pickle.dumps(_RunsACommand(tmp_path / "x")))
    result = run_command("alexnet_tf.import_weights", f"--weights={bad}", f"--model_dir={tmp_path / 'bad_run'}",
                         check=False)
    assert result.returncode == 1 and "refused to load the global" in result.stderr
    assert not (tmp_path / "bad_run").exists() and not (tmp_path / "x").exists()
