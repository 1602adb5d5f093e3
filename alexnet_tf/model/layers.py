"""The paper's layers beyond stock Keras: LRN, the two-tower convolution, and a Dense whose
gradient runs on a faster kernel; and PyTorch's adaptive average pooling, which
torchvision's AlexNet has after pool5.

Each computes one fixed function (the paper's math, here) and chooses HOW at trace time
("auto"), by what the device's kernels do well; the kernels live in
`alexnet_tf.model.kernels`, and every choice is tested equal to the others. Inside
`portable_kernels()` (what the export uses) "auto" picks the plain TensorFlow ops that every
runtime has: no XLA, no grouped convolution, so TF Serving loads the graph with its
default flags.
"""

import tensorflow as tf
import keras

from alexnet_tf.model.kernels import (conv_bias_relu, cpu_trains_grouped_conv, fused_lrn, has_gpu, is_portable,
                                      matmul_with_fast_gradient, portable_kernels)

__all__ = ["LRN_ALPHA", "LRN_BETA", "LRN_BIAS", "LRN_DEPTH_RADIUS", "AdaptiveAveragePooling2D", "Dense",
           "GroupedConv2D", "LocalResponseNormalization", "portable_kernels"]

# The paper's LRN constants (Section 3.3): k = 2, n = 5, alpha = 1e-4, beta = 0.75.
# TensorFlow's `depth_radius` is n / 2 rounded down, and its `alpha` multiplies the plain
# sum of squares exactly as in the paper (Caffe divides its alpha by n; TF does not).
LRN_DEPTH_RADIUS = 2
LRN_BIAS = 2.0
LRN_ALPHA = 1e-4
LRN_BETA = 0.75


# ---------------------------------------------------------------------------------------
# Local response normalisation


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
            return "native" if is_portable() or has_gpu() else "fused"
        return self.implementation

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        if self._resolved_implementation() == "fused":
            outputs = fused_lrn(self.depth_radius, self.bias, self.alpha, self.beta)(x)
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
    gradient from `conv_bias_relu`: TensorFlow's, with the bias gradient left unfused
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
            if is_portable():
                return "towers"
            if has_gpu() or cpu_trains_grouped_conv(tf.as_dtype(self.compute_dtype)):
                return "native"
            return "towers"
        return self.implementation

    def call(self, inputs):
        if (self._resolved_implementation() == "native" and not is_portable() and not has_gpu()
                and self.use_bias and self.activation is keras.activations.relu
                and tuple(self.dilation_rate) == (1, 1)):
            # One convolution on a CPU: the same function, with the bias gradient unfused.
            return conv_bias_relu(tuple(self.strides), self.padding.upper())(
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


@keras.saving.register_keras_serializable(package="alexnet_tf")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` whose input gradient runs on a faster kernel.

    Same variables, outputs and gradients (to float32 rounding); only the op computing
    dL/dx = dL/dy @ kernel^T differs. Inside `portable_kernels()`, and for inputs of rank
    other than 2, it is Keras' own Dense.
    """

    def call(self, inputs, training=None):
        if is_portable() or inputs.shape.rank != 2:
            return super().call(inputs, training=training)
        x = matmul_with_fast_gradient(inputs, tf.convert_to_tensor(self.kernel))
        if self.bias is not None:
            x = tf.nn.bias_add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


# ---------------------------------------------------------------------------------------
# Adaptive average pooling (torchvision's AlexNet)


def adaptive_pool_matrix(in_size, out_size):
    """[out, in] averaging weights of PyTorch's adaptive pooling along one axis: output i
    averages inputs floor(i * in / out) .. ceil((i + 1) * in / out) - 1 (bins may overlap)."""
    import numpy as np

    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


@keras.saving.register_keras_serializable(package="alexnet_tf")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """PyTorch's `AdaptiveAvgPool2d(output_size)` for NHWC input of a static spatial size:
    the same bins, so torchvision's weights compute the same function at any input size.
    An input already of the output size passes unchanged (torchvision's 224-px case)."""

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        self.output_size = int(output_size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size, self.output_size, input_shape[3])

    def call(self, inputs):
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            raise ValueError(f"{self.name} needs a static spatial size. Received: input shape {inputs.shape}")
        if (height, width) == (self.output_size, self.output_size):
            return inputs
        rows = tf.constant(adaptive_pool_matrix(height, self.output_size), dtype=inputs.dtype)
        cols = tf.constant(adaptive_pool_matrix(width, self.output_size), dtype=inputs.dtype)
        return tf.einsum("ih,bhwc,jw->bijc", rows, inputs, cols)

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}
