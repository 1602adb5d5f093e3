"""The CPU speed kernels behind the paper's layers, and their portable swap for export.

Each function here computes exactly what a stock TensorFlow op (or op pair) computes, on
kernels that a CPU runs faster: the fused XLA LRN with its own gradient, a convolution whose
bias gradient the graph rewriter leaves unfused, a Dense input gradient on BatchMatMulV2.
`alexnet_tf.model.layers` holds the paper's math and picks among these at trace time;
inside `portable_kernels()` (what the export traces) it picks the plain TensorFlow ops that
any runtime has. WORKSPACE.md ("Model step design") has the measurements.
"""

import contextlib
import functools
import threading

import tensorflow as tf

_state = threading.local()


@contextlib.contextmanager
def portable_kernels():
    """Within it, "auto" layers trace only ops that any TensorFlow runtime runs.

    For graphs that leave this process (SavedModel for TF Serving): no XLA-compiled
    functions (TF Serving refuses them unless started with --xla_cpu_compilation_enabled)
    and no grouped convolutions (CPU builds without oneDNN cannot run them).
    """
    previous = getattr(_state, "portable", False)
    _state.portable = True
    try:
        yield
    finally:
        _state.portable = previous


def is_portable():
    """Whether this thread is inside `portable_kernels()`."""
    return getattr(_state, "portable", False)


def has_gpu():
    """Whether TensorFlow sees a GPU (there the layers use cuDNN's kernels)."""
    return bool(tf.config.list_logical_devices("GPU"))


# ---------------------------------------------------------------------------------------
# Local response normalisation


def window_sum(values, depth_radius):
    """sum_{j = i - r}^{i + r} values[..., j] over the last axis, zero outside it."""
    if depth_radius == 0:
        return values
    depth = values.shape[-1]
    padded = tf.pad(values, [[0, 0]] * (values.shape.rank - 1) + [[depth_radius, depth_radius]])
    return tf.add_n([padded[..., k:k + depth] for k in range(2 * depth_radius + 1)])


def power_of_rsqrt(root, exponent):
    """d ** -exponent from root = d ** -0.5, as root ** (2 * exponent); the paper's 0.75 as
    root * sqrt(root): XLA's general pow costs 3x more on a CPU."""
    if exponent == 0.75:
        return root * tf.math.sqrt(root)
    if exponent == 0.5:
        return root
    if exponent == 1.0:
        return root * root
    return tf.pow(root, 2.0 * exponent)


@functools.cache
def fused_lrn(depth_radius, bias, alpha, beta):
    """LRN and its gradient as two XLA functions.

    With d = bias + alpha * window_sum(x^2), r = d^-1/2 and y = x * d^-beta:
      dL/dx = g * d^-beta - 2 * alpha * beta * x * window_sum(g * y / d).
    The forward also returns r, so the gradient needs no second window sum over x^2
    (1/d = r^2), and the gradient takes y, the forward's output, which the next layer keeps
    alive anyway: the windowed product g * y * r^2 then needs no root, so XLA has no root to
    share between its two loops and writes none to memory. TensorFlow's CPU LRNGrad kernel
    computes a pow per element and window entry; this is ~4x faster on conv1's output.
    """

    @tf.function(jit_compile=True, autograph=False)
    def forward(x):
        root = tf.math.rsqrt(bias + alpha * window_sum(tf.square(x), depth_radius))
        return x * power_of_rsqrt(root, beta), root

    @tf.function(jit_compile=True, autograph=False)
    def backward(x, outputs, root, upstream):
        window = window_sum(upstream * outputs * (root * root), depth_radius)
        return upstream * power_of_rsqrt(root, beta) - (2.0 * alpha * beta) * x * window

    # Not autograph's: converted, the returned gradient function breaks the custom gradient.
    @tf.autograph.experimental.do_not_convert
    @tf.custom_gradient
    def lrn(x):
        outputs, root = forward(x)
        return outputs, lambda upstream: backward(x, outputs, root, upstream)

    return lrn


# ---------------------------------------------------------------------------------------
# Convolution


def conv_backprop(x, kernel, upstream, strides, padding):
    """(dL/dx, dL/dkernel) of conv2d(x, kernel) from dL/dy, TensorFlow's two kernels."""
    input_gradient = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x), filter=kernel, out_backprop=upstream, strides=strides, padding=padding)
    kernel_gradient = tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(kernel), out_backprop=upstream, strides=strides, padding=padding)
    return input_gradient, kernel_gradient


@functools.cache
def cpu_trains_grouped_conv(dtype):
    """Whether this process's CPU kernels run a grouped convolution AND its gradients.

    oneDNN (TensorFlow's default on x86 Linux) does for float32 and bfloat16; without it
    (TF_ENABLE_ONEDNN_OPTS=0, other platforms) the forward runs but Conv2DBackpropInput
    refuses, and oneDNN's float16 Conv2DBackpropFilter refuses too. Only a graph with the
    gradients tells, so that is what this runs, once per dtype (a few milliseconds).
    """

    # The kernels themselves, not a GradientTape: tf.init_scope (needed when this runs while
    # a layer is traced) pauses every tape, and a paused tape would compute nothing.
    @tf.function(autograph=False)
    def probe(x, kernel, upstream):
        strides, padding = [1, 1, 1, 1], "SAME"
        y = tf.nn.conv2d(x, kernel, strides=strides, padding=padding)
        input_gradient, kernel_gradient = conv_backprop(x, kernel, upstream, strides, padding)
        return tf.reduce_sum(y) + tf.reduce_sum(input_gradient) + tf.reduce_sum(kernel_gradient)

    with tf.init_scope(), tf.device("/CPU:0"):
        try:
            probe(tf.ones([1, 3, 3, 4], dtype), tf.ones([3, 3, 2, 4], dtype), tf.ones([1, 3, 3, 4], dtype)).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError):
            return False
    return True


@functools.cache
def conv_bias_relu(strides, padding):
    """relu(conv2d(x, kernel) + bias) whose bias gradient is a plain reduction.

    The forward is the ops TensorFlow fuses into one oneDNN convolution; the gradient is
    TensorFlow's own (ReluGrad, then Conv2DBackpropInput and Conv2DBackpropFilter) except
    that the bias gradient is a Sum its graph rewriter leaves alone: it otherwise fuses it
    into the filter gradient, which oneDNN then runs slower (conv1 at batch 64: 50 vs 42 ms
    for filter and bias gradients).
    """
    strides_4d = [1, *strides, 1]

    @tf.autograph.experimental.do_not_convert
    @tf.custom_gradient
    def conv_bias_relu(x, kernel, bias):
        outputs = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, strides_4d, padding), bias))

        def gradient(upstream):
            pre_activation = tf.raw_ops.ReluGrad(gradients=upstream, features=outputs)
            input_gradient, kernel_gradient = conv_backprop(x, kernel, pre_activation, strides_4d, padding)
            bias_gradient = tf.reduce_sum(tf.reshape(pre_activation, [-1, bias.shape[0]]), axis=0)
            return input_gradient, kernel_gradient, bias_gradient

        return outputs, gradient

    return conv_bias_relu


# ---------------------------------------------------------------------------------------
# Fully connected


@tf.autograph.experimental.do_not_convert
@tf.custom_gradient
def matmul_with_fast_gradient(x, kernel):
    def gradient(upstream):
        # dy @ kernel^T as BatchMatMulV2(adj_y): oneDNN runs it ~2.8x faster than the MatMul
        # with transpose_b that TensorFlow's registered gradient uses (fc6: 14 vs 39 ms).
        input_gradient = tf.raw_ops.BatchMatMulV2(x=upstream, y=kernel, adj_x=False, adj_y=True)
        return input_gradient, tf.matmul(x, upstream, transpose_a=True)

    return tf.matmul(x, kernel), gradient
