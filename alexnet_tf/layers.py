"""The two layers AlexNet needs beyond stock Keras: LRN and the two-tower convolution."""

import tensorflow as tf
import keras

# The paper's LRN constants (Section 3.3): k = 2, n = 5, alpha = 1e-4, beta = 0.75.
# TensorFlow's `depth_radius` is n / 2 rounded down, and its `alpha` multiplies the plain
# sum of squares exactly as in the paper (Caffe divides its alpha by n; TF does not).
LRN_DEPTH_RADIUS = 2
LRN_BIAS = 2.0
LRN_ALPHA = 1e-4
LRN_BETA = 0.75


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
    """

    def __init__(
        self,
        depth_radius=LRN_DEPTH_RADIUS,
        bias=LRN_BIAS,
        alpha=LRN_ALPHA,
        beta=LRN_BETA,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if depth_radius < 0:
            raise ValueError(f"Expected depth_radius >= 0. Received: depth_radius={depth_radius}")
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)
        # Keep the caller's dtype through the layer; the maths happens in float32 below.
        self.autocast = False

    def call(self, inputs):
        outputs = tf.nn.local_response_normalization(
            tf.cast(inputs, tf.float32),
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
        )
        return config


@keras.saving.register_keras_serializable(package="alexnet_tf")
class GroupedConv2D(keras.layers.Conv2D):
    """A `Conv2D(groups=g)` computed as the paper's g towers (one convolution per group).

    The kernel is the same single variable as Keras' grouped Conv2D, shape
    (kh, kw, in_channels / groups, filters), so weights move freely between the two.
    Only the computation differs:

    - "towers": split the input channels and the kernel's output filters into `groups`
      parts, convolve each pair, concatenate. Plain convolutions run on every device;
      on a CPU this is ~3.6x faster than Keras' grouped path, which goes through XLA.
    - "native": one grouped `tf.nn.conv2d` call, which cuDNN runs as a grouped
      convolution on a GPU (and XLA compiles anywhere). Without a GPU or XLA, TensorFlow's
      CPU kernel rejects grouped convolutions.
    - "keras": Keras' own grouped path (kept for comparison in the benchmark).
    - "auto": "native" when TensorFlow sees a GPU, else "towers".

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
            return "native" if tf.config.list_logical_devices("GPU") else "towers"
        return self.implementation

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
