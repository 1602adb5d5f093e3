import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf import GroupedConv2D, LocalResponseNormalization, portable_kernels
from alexnet_tf.model import kernels, layers

LRN_IMPLEMENTATIONS = ["native", "fused"]


def _paper_lrn(a, *, k=2.0, n=5, alpha=1e-4, beta=0.75):
    """The paper's formula, Section 3.3, written out channel by channel."""
    num_kernels = a.shape[-1]
    b = np.empty_like(a, dtype=np.float64)
    for i in range(num_kernels):
        lo, hi = max(0, i - n // 2), min(num_kernels - 1, i + n // 2)
        b[..., i] = a[..., i] / (k + alpha * np.sum(a[..., lo:hi + 1] ** 2, axis=-1)) ** beta
    return b


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("implementation", LRN_IMPLEMENTATIONS)
def test_lrn_matches_the_papers_formula(implementation, graph):
    rng = np.random.default_rng(0)
    # Large activations so the normalisation term is far from its bias k = 2; non-square.
    a = rng.uniform(0.0, 60.0, size=(2, 3, 5, 11)).astype(np.float32)
    layer = LocalResponseNormalization(implementation=implementation)
    run = tf.function(layer.__call__) if graph else layer
    b = run(a)
    np.testing.assert_allclose(b.numpy(), _paper_lrn(a.astype(np.float64)), rtol=1e-5)
    # The sum really is over the 5-channel window: changing a distant channel changes nothing.
    a2 = a.copy()
    a2[..., 10] += 100.0
    b2 = run(a2).numpy()
    np.testing.assert_array_equal(b2[..., :8], b.numpy()[..., :8])
    assert not np.allclose(b2[..., 8:], b.numpy()[..., 8:])


def _numerical_gradient(f, a, upstream, eps=1e-4):
    """d sum(upstream * f(a)) / da by central differences, in float64."""
    grad = np.zeros_like(a)
    for index in np.ndindex(a.shape):
        plus, minus = a.copy(), a.copy()
        plus[index] += eps
        minus[index] -= eps
        grad[index] = np.sum(upstream * (f(plus) - f(minus))) / (2 * eps)
    return grad


@pytest.mark.parametrize("depth_radius,beta", [(2, 0.75), (1, 0.5), (0, 1.0), (3, 0.6)])
@pytest.mark.parametrize("implementation", LRN_IMPLEMENTATIONS)
def test_lrn_gradient_matches_the_papers_formula(implementation, depth_radius, beta):
    # Differentiating the numpy formula, not TensorFlow: a wrong hand-written gradient
    # (the fused path's) or constant would show. A large alpha makes the window term count.
    rng = np.random.default_rng(4)
    a = rng.uniform(0.0, 3.0, size=(1, 2, 3, 7))
    a[0, 0, 0, :3] = 0.0  # ReLU zeros are the common case
    upstream = rng.normal(size=a.shape)
    alpha, bias = 0.3, 1.5
    layer = LocalResponseNormalization(depth_radius=depth_radius, bias=bias, alpha=alpha, beta=beta,
                                       implementation=implementation)
    x = tf.constant(a, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    grad = tape.gradient(y, x, output_gradients=tf.constant(upstream, tf.float32)).numpy()
    paper = lambda v: _paper_lrn(v, k=bias, n=2 * depth_radius + 1, alpha=alpha, beta=beta)  # noqa: E731
    np.testing.assert_allclose(grad, _numerical_gradient(paper, a, upstream), rtol=2e-4, atol=2e-5)


def test_custom_gradients_survive_autograph(tmp_path):
    # Called straight from code that autograph converts, the custom-gradient functions must
    # still give their gradients (converted, their returned gradient closures break). A script
    # file: autograph does not convert the functions of pytest's rewritten test modules.
    script = tmp_path / "user_code.py"
    script.write_text("""
import numpy as np, tensorflow as tf
from alexnet_tf import LocalResponseNormalization
from alexnet_tf.model import kernels
fused_lrn = kernels.fused_lrn(2, 2.0, 1e-4, 0.75)
kernel = tf.random.stateless_normal([4, 3], seed=[5, 6])
conv = kernels.conv_bias_relu((1, 1), "SAME")
conv_kernel = tf.random.stateless_normal([3, 3, 6, 2], seed=[7, 8])

@tf.function
def gradients(images, features, lrn=fused_lrn):
    with tf.GradientTape() as tape:
        tape.watch([images, features])
        loss = tf.reduce_sum(lrn(images)) + tf.reduce_sum(kernels.matmul_with_fast_gradient(features, kernel))
    return tape.gradient(loss, [images, features])

@tf.function
def conv_gradient(images):
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = tf.reduce_sum(conv(images, conv_kernel, tf.constant([0.5, -0.5])))
    return tape.gradient(loss, images)

images = tf.random.stateless_uniform([1, 2, 3, 6], seed=[1, 2], maxval=50.0)
features = tf.random.stateless_normal([2, 4], seed=[3, 4])
image_grad, feature_grad = gradients(images, features)
with tf.GradientTape() as tape:
    tape.watch(images)
    expected = tape.gradient(tf.reduce_sum(tf.nn.relu(tf.nn.conv2d(images, conv_kernel, 1, "SAME") + [0.5, -0.5])), images)
np.testing.assert_allclose(conv_gradient(images), expected, rtol=1e-5, atol=1e-5)
with tf.GradientTape() as tape:
    tape.watch(images)
    expected = tape.gradient(tf.reduce_sum(LocalResponseNormalization(implementation="native")(images)), images)
np.testing.assert_allclose(image_grad, expected, rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(feature_grad, np.tile(kernel.numpy().sum(axis=1), (2, 1)), rtol=1e-5)
print("gradients ok")
""")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["gradients", "ok"]


def test_fused_lrn_equals_tensorflows_kernels_on_conv1_sized_channels():
    # The paper's constants, 96 channels, activations as after conv1's ReLU.
    rng = np.random.default_rng(5)
    a = np.maximum(rng.normal(0.0, 40.0, size=(2, 7, 5, 96)), 0.0).astype(np.float32)
    upstream = tf.constant(rng.normal(size=a.shape).astype(np.float32))
    outputs, grads = [], []
    for implementation in LRN_IMPLEMENTATIONS:
        x = tf.constant(a)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = LocalResponseNormalization(implementation=implementation)(x)
        outputs.append(y.numpy())
        grads.append(tape.gradient(y, x, output_gradients=upstream).numpy())
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(grads[1], grads[0], rtol=2e-5, atol=1e-6)


def test_lrn_auto_is_fused_on_a_cpu_and_native_when_portable():
    layer = LocalResponseNormalization()
    assert layer.implementation == "auto"
    expected = "native" if tf.config.list_logical_devices("GPU") else "fused"  # cuDNN's on a GPU
    assert layer._resolved_implementation() == expected
    with portable_kernels():
        assert layer._resolved_implementation() == "native"
        with portable_kernels():  # nests
            pass
        assert layer._resolved_implementation() == "native"
    assert layer._resolved_implementation() == expected
    # An explicit choice is kept even for export.
    with portable_kernels():
        assert LocalResponseNormalization(implementation="fused")._resolved_implementation() == "fused"
    with pytest.raises(ValueError, match="implementation"):
        LocalResponseNormalization(implementation="fast")


def test_lrn_defaults_are_the_papers_constants():
    layer = LocalResponseNormalization()
    assert (layer.depth_radius, layer.bias, layer.alpha, layer.beta) == (2, 2.0, 1e-4, 0.75)
    config = layer.get_config()
    assert {k: config[k] for k in ("depth_radius", "bias", "alpha", "beta")} == {
        "depth_radius": 2, "bias": 2.0, "alpha": 1e-4, "beta": 0.75}


@pytest.mark.parametrize("implementation", LRN_IMPLEMENTATIONS)
def test_lrn_computes_in_float32_under_mixed_precision(implementation):
    # 300^2 * 5 overflows float16 (max 65504); the float32 computation does not.
    a = np.full((1, 2, 2, 8), 300.0, np.float32)
    layer = LocalResponseNormalization(dtype="mixed_float16", implementation=implementation)
    b = layer(tf.constant(a, tf.float16))
    assert b.dtype == tf.float16
    assert np.all(np.isfinite(b.numpy()))
    np.testing.assert_allclose(b.numpy().astype(np.float64), _paper_lrn(a.astype(np.float64)), rtol=2e-3)


def test_lrn_reloads_without_custom_objects(tmp_path):
    inputs = keras.Input((4, 4, 6))
    model = keras.Model(inputs, LocalResponseNormalization(depth_radius=1, bias=1.5, alpha=0.01, beta=0.5,
                                                           implementation="native")(inputs))
    path = tmp_path / "lrn.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    layer = reloaded.layers[-1]
    assert isinstance(layer, LocalResponseNormalization)
    assert (layer.depth_radius, layer.bias, layer.alpha, layer.beta) == (1, 1.5, 0.01, 0.5)
    assert layer.implementation == "native"
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
    # XLA compiles the one grouped convolution on any device.
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


def _grouped_pair(x_shape, dtype="float32"):
    towers = GroupedConv2D(6, 3, groups=2, implementation="towers", dtype=dtype)
    native = GroupedConv2D(6, 3, groups=2, implementation="native", dtype=dtype)
    towers.build(x_shape)
    native.build(x_shape)
    native.set_weights(towers.get_weights())
    return towers, native


def _output_and_gradients(layer, x):
    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.range(6, dtype=tf.float32))
        return [y, *tape.gradient(loss, [x, layer.kernel, layer.bias])]
    return [t.numpy().astype(np.float64) for t in run(x)]


def test_grouped_conv_probe_tells_whether_the_cpu_trains_native_grouped_convolutions():
    # The probe's answer is what really happens, both ways.
    x = tf.constant(np.random.default_rng(6).normal(size=(2, 7, 5, 4)), tf.float32)
    _, native = _grouped_pair(x.shape)
    if kernels.cpu_trains_grouped_conv(tf.float32):
        assert all(np.all(np.isfinite(t)) for t in _output_and_gradients(native, x))
        assert GroupedConv2D(6, 3, groups=2)._resolved_implementation() == "native"
    else:
        # The failures the probe catches: which one TensorFlow raises depends on the kernel that
        # meets the grouped convolution first (seen here: InvalidArgumentError, and in a
        # process that had run other tests, UnimplementedError at the BiasAdd).
        with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError)):
            _output_and_gradients(native, x)
        assert GroupedConv2D(6, 3, groups=2)._resolved_implementation() == "towers"
    with portable_kernels():
        assert GroupedConv2D(6, 3, groups=2)._resolved_implementation() == "towers"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_grouped_conv_native_equals_towers_with_gradients(dtype):
    if not kernels.cpu_trains_grouped_conv(tf.as_dtype(dtype)):
        pytest.skip(f"this CPU's kernels do not train grouped {dtype} convolutions")
    x = tf.constant(np.random.default_rng(7).normal(size=(2, 7, 5, 4)), dtype)
    towers, native = _grouped_pair(x.shape, dtype)
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    for expected, actual in zip(_output_and_gradients(towers, x), _output_and_gradients(native, x)):
        np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance)


def test_auto_kernels_train_where_onednn_is_off(tmp_path):
    # A TensorFlow without oneDNN cannot take the gradient of a grouped convolution: "auto"
    # must see that and fall back to the towers; the fused LRN and Dense need nothing of it.
    script = """
import numpy as np, tensorflow as tf, keras
from alexnet_tf import build_alexnet
from alexnet_tf.model import kernels
model = build_alexnet(5, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=16, seed=0)
x = tf.constant(np.random.default_rng(0).normal(size=(2, 64, 64, 3)) * 50, tf.float32)
@tf.function
def gradients(x):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2)
    return tape.gradient(loss, model.trainable_variables)
grads = gradients(x)
print(kernels.cpu_trains_grouped_conv(tf.float32), model.get_layer("conv2")._resolved_implementation(),
      all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads))
"""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                            timeout=300, check=True, cwd=str(tmp_path))
    assert result.stdout.split()[-3:] == ["False", "towers", "True"]


def test_dense_gradients_equal_keras_dense():
    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(size=(5, 13)), tf.float32)
    fast = layers.Dense(7, activation="relu")
    reference = keras.layers.Dense(7, activation="relu")
    fast.build(x.shape)
    reference.build(x.shape)
    reference.set_weights([w + 0.1 for w in fast.get_weights()])
    fast.set_weights(reference.get_weights())
    results = []
    for layer in (fast, reference):
        @tf.function
        def run(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * tf.range(7, dtype=tf.float32))
            return [y, *tape.gradient(loss, [x, layer.kernel, layer.bias])]
        results.append([t.numpy() for t in run(x)])
    for actual, expected in zip(*results):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(results[0][1]).max() > 0  # the input gradient is not trivially zero
    # Rank-3 inputs and portable graphs take Keras' own path, with the same values.
    x3 = tf.constant(rng.normal(size=(2, 3, 13)), tf.float32)
    np.testing.assert_allclose(fast(x3), reference(x3), rtol=1e-5, atol=1e-6)
    with portable_kernels():
        np.testing.assert_allclose(fast(x), reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,input_shape,dtype", [
    (dict(filters=8, kernel_size=11, strides=4, padding="valid"), (2, 31, 31, 3), "float32"),  # conv1's shape
    (dict(filters=6, kernel_size=3, padding="same", groups=2), (2, 7, 5, 4), "float32"),
    (dict(filters=6, kernel_size=5, padding="same"), (2, 9, 9, 4), "bfloat16"),
])
def test_conv_with_relu_and_unfused_bias_gradient_equals_keras_conv2d(kwargs, input_shape, dtype):
    if not kernels.cpu_trains_grouped_conv(tf.as_dtype(dtype)) and kwargs.get("groups", 1) > 1:
        pytest.skip(f"this CPU's kernels do not train grouped {dtype} convolutions")
    rng = np.random.default_rng(11)
    x = tf.constant(rng.normal(size=input_shape), dtype)
    fast = GroupedConv2D(activation="relu", dtype=dtype, **kwargs)
    reference = keras.layers.Conv2D(activation="relu", dtype=dtype, **kwargs)
    fast.build(x.shape)
    reference.build(x.shape)
    # A bias that moves the ReLU's threshold, so the masks matter.
    fast.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.3 for w in fast.get_weights()])
    reference.set_weights(fast.get_weights())
    # The fast path really runs: its custom gradient shows as an IdentityN in the graph.
    def op_types():
        return {op.type for op in tf.function(fast.__call__).get_concrete_function(x).graph.get_operations()}
    assert "IdentityN" in op_types()
    with portable_kernels():
        assert "IdentityN" not in op_types()
    tolerance = 1e-5 if dtype == "float32" else 3e-2
    weights = tf.constant(rng.normal(size=fast.compute_output_shape(x.shape)[1:]), tf.float32)
    for graph_mode in (True, False):
        results = []
        for layer in (fast, reference):
            def run(x, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x)
                    loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
                return [y, *tape.gradient(loss, [x, layer.kernel, layer.bias])]
            run = tf.function(run) if graph_mode else run
            results.append([tf.cast(t, tf.float64).numpy() for t in run(x)])
        for actual, expected in zip(*results):
            assert np.abs(expected).max() > 0
            np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("in_size", [6, 7, 13, 4])
def test_adaptive_average_pooling_is_pytorchs(in_size):
    # PyTorch's bins: output i averages inputs floor(i*n/6) .. ceil((i+1)*n/6) - 1; they
    # overlap when n is not a multiple of 6, and repeat inputs when n < 6.
    from alexnet_tf.model.layers import AdaptiveAveragePooling2D

    x = np.random.default_rng(in_size).normal(size=(2, in_size, in_size + 2, 3)).astype(np.float32)
    out = AdaptiveAveragePooling2D(6)(x).numpy()
    expected = np.zeros((2, 6, 6, 3), np.float32)
    for i in range(6):
        for j in range(6):
            rows = slice(i * in_size // 6, -(-(i + 1) * in_size // 6))
            cols = slice(j * (in_size + 2) // 6, -(-(j + 1) * (in_size + 2) // 6))
            expected[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
