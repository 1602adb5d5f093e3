"""The layers AlexNet needs beyond stock Keras: LRN, the two-tower convolution, and a Dense
whose gradient runs on a faster kernel.

Each computes one fixed function and chooses HOW at trace time ("auto"), by what the
device's kernels do well; every choice is tested equal to the others. Inside `portable_kernels()`
(what the export uses) "auto" picks the plain TensorFlow ops that every runtime has: no
XLA, no grouped convolution, so TF Serving loads the graph with its default flags.
"""

import contextlib
import functools
import threading

import tensorflow as tf
import keras

# The paper's LRN constants (Section 3.3): k = 2, n = 5, alpha = 1e-4, beta = 0.75.
# TensorFlow's `depth_radius` is n / 2 rounded down, and its `alpha` multiplies the plain
# sum of squares exactly as in the paper (Caffe divides its alpha by n; TF does not).
LRN_DEPTH_RADIUS = 2
LRN_BIAS = 2.0
LRN_ALPHA = 1e-4
LRN_BETA = 0.75

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


def _portable():
    return getattr(_state, "portable", False)


def _has_gpu():
    return bool(tf.config.list_logical_devices("GPU"))


# ---------------------------------------------------------------------------------------
# Local response normalisation


def _window_sum(values, depth_radius):
    """sum_{j = i - r}^{i + r} values[..., j] over the last axis, zero outside it."""
    if depth_radius == 0:
        return values
    depth = values.shape[-1]
    padded = tf.pad(values, [[0, 0]] * (values.shape.rank - 1) + [[depth_radius, depth_radius]])
    return tf.add_n([padded[..., k:k + depth] for k in range(2 * depth_radius + 1)])


def _power_of_rsqrt(root, exponent):
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
def _fused_lrn(depth_radius, bias, alpha, beta):
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
        root = tf.math.rsqrt(bias + alpha * _window_sum(tf.square(x), depth_radius))
        return x * _power_of_rsqrt(root, beta), root

    @tf.function(jit_compile=True, autograph=False)
    def backward(x, outputs, root, upstream):
        window = _window_sum(upstream * outputs * (root * root), depth_radius)
        return upstream * _power_of_rsqrt(root, beta) - (2.0 * alpha * beta) * x * window

    # Not autograph's: converted, the returned gradient function breaks the custom gradient.
    @tf.autograph.experimental.do_not_convert
    @tf.custom_gradient
    def lrn(x):
        outputs, root = forward(x)
        return outputs, lambda upstream: backward(x, outputs, root, upstream)

    return lrn


@keras.saving.register_keras_serializable(package="alexnet_tf")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation across channels (the paper's Section 3.3).

    b[x, y, i] = a[x, y, i] / (bias + alpha * sum_{j in [i-r, i+r]} a[x, y, j]^2) ** beta

    Computed in float32 whatever the dtype policy: the sum of squares and the power are
    fragile in float16. The output has the dtype of the input.

    Args:
      depth_radius: half-width r of the channel window (the paper's n = 2r + 1 = 5).
      bias: the paper's k.
      alpha: scale of the sum of squares (not divided by the window size).
      beta: exponent.
      implementation: how the same function is computed:
        - "native": `tf.nn.local_response_normalization` (TensorFlow's LRN and LRNGrad
          kernels; cuDNN's on a GPU).
        - "fused": the formula as XLA-compiled ops with a hand-written gradient; on a CPU
          the forward is ~4x and the gradient ~3x faster than TensorFlow's kernels.
        - "auto": "native" on a GPU and inside `portable_kernels()`, else "fused".
    """

    IMPLEMENTATIONS = ("auto", "native", "fused")

    def __init__(
        self,
        depth_radius=LRN_DEPTH_RADIUS,
        bias=LRN_BIAS,
        alpha=LRN_ALPHA,
        beta=LRN_BETA,
        implementation="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if depth_radius < 0:
            raise ValueError(f"Expected depth_radius >= 0. Received: depth_radius={depth_radius}")
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(
                f"Expected implementation to be one of {self.IMPLEMENTATIONS}. "
                f"Received: implementation={implementation!r}"
            )
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.implementation = implementation
        # Keep the caller's dtype through the layer; the maths happens in float32 below.
        self.autocast = False

    def _resolved_implementation(self):
        if self.implementation == "auto":
            return "native" if _portable() or _has_gpu() else "fused"
        return self.implementation

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        if self._resolved_implementation() == "fused":
            outputs = _fused_lrn(self.depth_radius, self.bias, self.alpha, self.beta)(x)
        else:
            outputs = tf.nn.local_response_normalization(
                x,
                depth_radius=self.depth_radius,
                bias=self.bias,
                alpha=self.alpha,
                beta=self.beta,
            )
        return tf.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha,
            beta=self.beta,
            implementation=self.implementation,
        )
        return config


# ---------------------------------------------------------------------------------------
# Grouped convolution


def _conv_backprop(x, kernel, upstream, strides, padding):
    """(dL/dx, dL/dkernel) of conv2d(x, kernel) from dL/dy, TensorFlow's two kernels."""
    input_gradient = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x), filter=kernel, out_backprop=upstream, strides=strides, padding=padding)
    kernel_gradient = tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(kernel), out_backprop=upstream, strides=strides, padding=padding)
    return input_gradient, kernel_gradient


@functools.cache
def _cpu_trains_grouped_conv(dtype):
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
        input_gradient, kernel_gradient = _conv_backprop(x, kernel, upstream, strides, padding)
        return tf.reduce_sum(y) + tf.reduce_sum(input_gradient) + tf.reduce_sum(kernel_gradient)

    with tf.init_scope(), tf.device("/CPU:0"):
        try:
            probe(tf.ones([1, 3, 3, 4], dtype), tf.ones([3, 3, 2, 4], dtype), tf.ones([1, 3, 3, 4], dtype)).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError):
            return False
    return True


@functools.cache
def _conv_bias_relu(strides, padding):
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
            input_gradient, kernel_gradient = _conv_backprop(x, kernel, pre_activation, strides_4d, padding)
            bias_gradient = tf.reduce_sum(tf.reshape(pre_activation, [-1, bias.shape[0]]), axis=0)
            return input_gradient, kernel_gradient, bias_gradient

        return outputs, gradient

    return conv_bias_relu


@keras.saving.register_keras_serializable(package="alexnet_tf")
class GroupedConv2D(keras.layers.Conv2D):
    """A `Conv2D(groups=g)` computed as the paper's g towers (one convolution per group).

    The kernel is the same single variable as Keras' grouped Conv2D, shape
    (kh, kw, in_channels / groups, filters), so weights move freely between the two.
    Only the computation differs:

    - "towers": split the input channels and the kernel's output filters into `groups`
      parts, convolve each pair, concatenate. Plain convolutions run on every device;
      on a CPU this is ~3.6x faster than Keras' grouped path, which goes through XLA.
    - "native": one grouped `tf.nn.conv2d` call: cuDNN on a GPU, oneDNN on a CPU (float32
      and bfloat16; the whole training step ~2% faster than with "towers": no split and
      concat copies), XLA anywhere. TensorFlow's CPU kernels without oneDNN cannot take
      its gradient.
    - "keras": Keras' own grouped path (kept for comparison in the benchmark).
    - "auto": "native" on a GPU, and on a CPU whose kernels were seen to train a grouped
      convolution in the compute dtype; "towers" otherwise and inside `portable_kernels()`.

    A single convolution ("native", or groups=1) with bias and ReLU on a CPU takes its
    gradient from `_conv_bias_relu`: TensorFlow's, with the bias gradient left unfused
    (the whole step ~3% faster).

    Args:
      implementation: "auto", "towers" or "native".
      **kwargs: as `keras.layers.Conv2D`, including `groups`.
    """

    IMPLEMENTATIONS = ("auto", "towers", "native", "keras")

    def __init__(self, *args, implementation="auto", **kwargs):
        super().__init__(*args, **kwargs)
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(
                f"Expected implementation to be one of {self.IMPLEMENTATIONS}. "
                f"Received: implementation={implementation!r}"
            )
        if self.data_format != "channels_last":
            raise ValueError(
                "GroupedConv2D supports data_format='channels_last' only. "
                f"Received: data_format={self.data_format!r}"
            )
        self.implementation = implementation

    def _resolved_implementation(self):
        if self.groups == 1:
            return "native"
        if self.implementation == "auto":
            if _portable():
                return "towers"
            if _has_gpu() or _cpu_trains_grouped_conv(tf.as_dtype(self.compute_dtype)):
                return "native"
            return "towers"
        return self.implementation

    def call(self, inputs):
        if (self._resolved_implementation() == "native" and not _portable() and not _has_gpu()
                and self.use_bias and self.activation is keras.activations.relu
                and tuple(self.dilation_rate) == (1, 1)):
            # One convolution on a CPU: the same function, with the bias gradient unfused.
            return _conv_bias_relu(tuple(self.strides), self.padding.upper())(
                inputs, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias))
        return super().call(inputs)

    def convolution_op(self, inputs, kernel):
        conv = lambda x, k: tf.nn.conv2d(  # noqa: E731
            x,
            k,
            strides=[1, *self.strides, 1],
            padding=self.padding.upper(),
            dilations=[1, *self.dilation_rate, 1],
        )
        implementation = self._resolved_implementation()
        if implementation == "keras":
            return super().convolution_op(inputs, kernel)
        if implementation == "native":
            return conv(inputs, kernel)
        input_towers = tf.split(inputs, self.groups, axis=-1)
        kernel_towers = tf.split(kernel, self.groups, axis=-1)
        return tf.concat([conv(x, k) for x, k in zip(input_towers, kernel_towers)], axis=-1)

    def get_config(self):
        config = super().get_config()
        config["implementation"] = self.implementation
        return config


# ---------------------------------------------------------------------------------------
# Fully connected


@tf.autograph.experimental.do_not_convert
@tf.custom_gradient
def _matmul_with_fast_gradient(x, kernel):
    def gradient(upstream):
        # dy @ kernel^T as BatchMatMulV2(adj_y): oneDNN runs it ~2.8x faster than the MatMul
        # with transpose_b that TensorFlow's registered gradient uses (fc6: 14 vs 39 ms).
        input_gradient = tf.raw_ops.BatchMatMulV2(x=upstream, y=kernel, adj_x=False, adj_y=True)
        return input_gradient, tf.matmul(x, upstream, transpose_a=True)

    return tf.matmul(x, kernel), gradient


@keras.saving.register_keras_serializable(package="alexnet_tf")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` whose input gradient runs on a faster kernel.

    Same variables, outputs and gradients (to float32 rounding); only the op computing
    dL/dx = dL/dy @ kernel^T differs. Inside `portable_kernels()`, and for inputs of rank
    other than 2, it is Keras' own Dense.
    """

    def call(self, inputs, training=None):
        if _portable() or inputs.shape.rank != 2:
            return super().call(inputs, training=training)
        x = _matmul_with_fast_gradient(inputs, tf.convert_to_tensor(self.kernel))
        if self.bias is not None:
            x = tf.nn.bias_add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x
