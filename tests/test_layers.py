import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf import GroupedConv2D, LocalResponseNormalization


def _paper_lrn(a, *, k=2.0, n=5, alpha=1e-4, beta=0.75):
    """The paper's formula, Section 3.3, written out channel by channel."""
    num_kernels = a.shape[-1]
    b = np.empty_like(a, dtype=np.float64)
    for i in range(num_kernels):
        lo, hi = max(0, i - n // 2), min(num_kernels - 1, i + n // 2)
        b[..., i] = a[..., i] / (k + alpha * np.sum(a[..., lo:hi + 1] ** 2, axis=-1)) ** beta
    return b


def test_lrn_matches_the_papers_formula():
    rng = np.random.default_rng(0)
    # Large activations so the normalisation term is far from its bias k = 2.
    a = rng.uniform(0.0, 60.0, size=(2, 3, 5, 11)).astype(np.float32)
    b = LocalResponseNormalization()(a)
    np.testing.assert_allclose(b.numpy(), _paper_lrn(a.astype(np.float64)), rtol=1e-5)
    # The sum really is over the 5-channel window: changing a distant channel changes nothing.
    a2 = a.copy()
    a2[..., 10] += 100.0
    b2 = LocalResponseNormalization()(a2).numpy()
    np.testing.assert_array_equal(b2[..., :8], b.numpy()[..., :8])
    assert not np.allclose(b2[..., 8:], b.numpy()[..., 8:])


def test_lrn_defaults_are_the_papers_constants():
    layer = LocalResponseNormalization()
    assert (layer.depth_radius, layer.bias, layer.alpha, layer.beta) == (2, 2.0, 1e-4, 0.75)
    config = layer.get_config()
    assert {k: config[k] for k in ("depth_radius", "bias", "alpha", "beta")} == {
        "depth_radius": 2, "bias": 2.0, "alpha": 1e-4, "beta": 0.75}


def test_lrn_computes_in_float32_under_mixed_precision():
    # 300^2 * 5 overflows float16 (max 65504); the float32 computation does not.
    a = np.full((1, 2, 2, 8), 300.0, np.float32)
    layer = LocalResponseNormalization(dtype="mixed_float16")
    b = layer(tf.constant(a, tf.float16))
    assert b.dtype == tf.float16
    assert np.all(np.isfinite(b.numpy()))
    np.testing.assert_allclose(b.numpy().astype(np.float64), _paper_lrn(a.astype(np.float64)), rtol=2e-3)


def test_lrn_reloads_without_custom_objects(tmp_path):
    inputs = keras.Input((4, 4, 6))
    model = keras.Model(inputs, LocalResponseNormalization(depth_radius=1, bias=1.5, alpha=0.01, beta=0.5)(inputs))
    path = tmp_path / "lrn.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    layer = reloaded.layers[-1]
    assert isinstance(layer, LocalResponseNormalization)
    assert (layer.depth_radius, layer.bias, layer.alpha, layer.beta) == (1, 1.5, 0.01, 0.5)
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 6)).astype(np.float32) * 10
    np.testing.assert_allclose(reloaded(x), model(x), rtol=1e-6)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_conv_towers_equal_one_grouped_convolution(groups):
    x = np.random.default_rng(2).normal(size=(2, 9, 7, 8)).astype(np.float32)
    towers = GroupedConv2D(12, 3, padding="same", groups=groups, implementation="towers")
    expected_towers = towers(x)
    assert towers.kernel.shape == (3, 3, 8 // groups, 12)
    # Keras' own grouped Conv2D with the same variables (it compiles with XLA on a CPU).
    reference = keras.layers.Conv2D(12, 3, padding="same", groups=groups)
    reference.build(x.shape)
    reference.set_weights(towers.get_weights())
    np.testing.assert_allclose(expected_towers, reference(x), rtol=1e-4, atol=1e-4)
    # By hand: group g of the output sees only input channels of group g.
    kernel = towers.kernel.numpy()
    in_per, out_per = 8 // groups, 12 // groups
    for g in range(groups):
        part = tf.nn.conv2d(x[..., g * in_per:(g + 1) * in_per],
                            kernel[..., g * out_per:(g + 1) * out_per], 1, "SAME")
        np.testing.assert_allclose(expected_towers[..., g * out_per:(g + 1) * out_per],
                                   part, rtol=1e-4, atol=1e-4)


def test_grouped_conv_native_path_matches_towers_under_xla():
    # "native" is what runs on a GPU (cuDNN grouped convolution); on a CPU only XLA runs it.
    x = np.random.default_rng(3).normal(size=(2, 6, 6, 4)).astype(np.float32)
    towers = GroupedConv2D(6, 3, groups=2, implementation="towers")
    native = GroupedConv2D(6, 3, groups=2, implementation="native")
    towers.build(x.shape)
    native.build(x.shape)
    native.set_weights(towers.get_weights())
    compiled = tf.function(native.__call__, jit_compile=True)
    np.testing.assert_allclose(compiled(x), towers(x), rtol=1e-4, atol=1e-5)


def test_grouped_conv_rejects_unknown_implementation():
    with pytest.raises(ValueError, match="implementation"):
        GroupedConv2D(4, 3, implementation="fast")
