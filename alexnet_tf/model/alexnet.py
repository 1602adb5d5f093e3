"""The AlexNet of Krizhevsky, Sutskever and Hinton (2012) as one Keras functional factory."""

import inspect

import tensorflow as tf
import keras

from alexnet_tf.model.layers import (LRN_ALPHA, LRN_BIAS, AdaptiveAveragePooling2D, Dense, GroupedConv2D,
                                     LocalResponseNormalization)
from alexnet_tf.model.optimizer import WeightDecay

# Section 5 of the paper: weights ~ N(0, 0.01); biases 1 in conv2, conv4, conv5 and the
# hidden fully connected layers ("accelerates the early stages of learning by providing
# the ReLUs with positive inputs"), 0 elsewhere.
PAPER_WEIGHT_STDDEV = 0.01
_PAPER_UNIT_BIAS_LAYERS = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})

INITS = ("paper", "he")

# The layers with weights, in order (Caffe's bvlc_alexnet names them the same).
WEIGHTED_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")

# The paper's widths (both GPU halves together), Section 3.5.
PAPER_CONV_FILTERS = (96, 256, 384, 384, 256)
PAPER_FC_UNITS = 4096

# conv1 is an 11x11 stride-4 VALID convolution: 224 + 1 + 2 = 227 gives the paper's 55x55.
# (Caffe's bvlc_alexnet takes 227-px crops and pads nothing: conv1_padding=(0, 0).)
PAPER_CONV1_PADDING = (1, 2)
# Dropout on the inputs of fc7 and fc8, i.e. after fc6 and fc7 (Section 4.2). torchvision's
# AlexNet has it on the inputs of fc6 and fc7 instead.
PAPER_DROPOUT_INPUTS_OF = ("fc7", "fc8")
_FC_LAYERS = ("fc6", "fc7", "fc8")

# The smallest input for which pool5 is still at least 1x1: (64 + 3 - 11) / 4 + 1 = 15,
# pool1 -> 7, pool2 -> 3, pool5 -> 1.
MIN_IMAGE_SIZE = 64


def _initializers(layer_name, init, seed):
    if init == "he":
        return keras.initializers.HeNormal(seed=seed), keras.initializers.Zeros()
    bias = 1.0 if layer_name in _PAPER_UNIT_BIAS_LAYERS else 0.0
    kernel = keras.initializers.RandomNormal(mean=0.0, stddev=PAPER_WEIGHT_STDDEV, seed=seed)
    return kernel, keras.initializers.Constant(bias)


def _layer_seed(seed, index):
    return None if seed is None else seed + index


def build_alexnet(
    num_classes=1000,
    *,
    image_size=224,
    groups=2,
    dropout=0.5,
    lrn=True,
    lrn_bias=LRN_BIAS,
    lrn_alpha=LRN_ALPHA,
    conv1_padding=PAPER_CONV1_PADDING,
    dropout_inputs_of=PAPER_DROPOUT_INPUTS_OF,
    adaptive_pool_size=None,
    weight_decay=5e-4,
    init="paper",
    conv_filters=PAPER_CONV_FILTERS,
    fc_units=PAPER_FC_UNITS,
    grouped_conv="auto",
    lrn_implementation="auto",
    seed=None,
    name="alexnet",
):
    """Builds the paper's network: five convolutional and three fully connected layers.

    Args:
      num_classes: width of fc8.
      image_size: side S of the square RGB input [B, S, S, 3] (224 in the paper; at least
        `MIN_IMAGE_SIZE`).
      groups: 2 reproduces the paper's two-GPU connectivity in conv2, conv4 and conv5;
        1 connects every layer to all of the previous one.
      dropout: rate of the dropout layers (0.5 in the paper).
      lrn: whether norm1 and norm2 normalise (False makes them identities, for ablations).
      lrn_bias: the LRN's k (the paper's 2; Caffe's bvlc_alexnet uses 1).
      lrn_alpha: the LRN's alpha, multiplying the plain sum of squares (the paper's 1e-4;
        Caffe's prototxt 1e-4 is divided by the window of 5, i.e. 2e-5 here).
      conv1_padding: (before, after) zeros added to each spatial side of the input before
        conv1 (the paper's (1, 2) makes 224 the 227 that gives 55x55; (0, 0) for 227 input).
      dropout_inputs_of: the fully connected layers whose inputs dropout drops: the paper's
        ("fc7", "fc8") (layers drop6, drop7); torchvision's ("fc6", "fc7") (drop5, drop6).
      adaptive_pool_size: None, or torchvision's 6: pool5 is followed by PyTorch's adaptive
        average pooling to 6x6 (the identity at 224 px), so any input size feeds fc6.
      weight_decay: the paper's decay: an L2 term whose gradient is `weight_decay * w` on
        every kernel, so it enters the momentum exactly as in the paper's update rule.
      init: "paper" (N(0, 0.01), unit biases in conv2/4/5, fc6/7) or "he".
      conv_filters: kernels of conv1..conv5 (shrink them for fast tests).
      fc_units: width of fc6 and fc7.
      grouped_conv: `GroupedConv2D` implementation ("auto", "towers" or "native").
      lrn_implementation: `LocalResponseNormalization` implementation ("auto", "native"
        or "fused").
      seed: optional integer making the initial weights reproducible.
      name: the model's name.

    Returns:
      A `keras.Model` mapping float images [B, S, S, 3] to logits [B, num_classes].
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"Expected image_size >= {MIN_IMAGE_SIZE}, the smallest input that leaves pool5 "
            f"at least 1x1. Received: image_size={image_size}"
        )
    if init not in INITS:
        raise ValueError(f"Expected init to be one of {INITS}. Received: init={init!r}")
    if groups < 1:
        raise ValueError(f"Expected groups >= 1. Received: groups={groups}")
    if len(conv_filters) != 5:
        raise ValueError(f"Expected 5 conv_filters (conv1..conv5). Received: {conv_filters}")
    for layer_name, channels in (("conv1", conv_filters[0]), ("conv3", conv_filters[2]),
                                 ("conv4", conv_filters[3]), ("conv5", conv_filters[4]),
                                 ("conv2", conv_filters[1])):
        if channels % groups:
            raise ValueError(
                f"Expected the kernels of {layer_name} to be divisible by groups={groups}. "
                f"Received: {channels}"
            )
    conv1_padding = tuple(int(p) for p in conv1_padding)
    if len(conv1_padding) != 2 or min(conv1_padding) < 0:
        raise ValueError(f"Expected conv1_padding to be two integers >= 0. Received: {conv1_padding}")
    if image_size + sum(conv1_padding) < MIN_IMAGE_SIZE + sum(PAPER_CONV1_PADDING):
        raise ValueError(
            f"Expected image_size + conv1 padding >= {MIN_IMAGE_SIZE + sum(PAPER_CONV1_PADDING)}, "
            f"the smallest input that leaves pool5 at least 1x1. Received: image_size={image_size}, "
            f"conv1_padding={conv1_padding}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"Expected 0 <= dropout < 1. Received: dropout={dropout}")
    dropout_inputs_of = tuple(dropout_inputs_of)
    if not set(dropout_inputs_of) <= set(_FC_LAYERS):
        raise ValueError(f"Expected dropout_inputs_of to name layers among {_FC_LAYERS}. "
                         f"Received: dropout_inputs_of={dropout_inputs_of}")
    if adaptive_pool_size is not None and int(adaptive_pool_size) < 1:
        raise ValueError(f"Expected adaptive_pool_size None or >= 1. Received: {adaptive_pool_size}")

    regularizer = WeightDecay(weight_decay) if weight_decay else None
    layer_index = iter(range(100))

    def conv(layer_name, filters, kernel_size, *, strides=1, padding="same", layer_groups=1):
        kernel_init, bias_init = _initializers(layer_name, init, _layer_seed(seed, next(layer_index)))
        return GroupedConv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            groups=layer_groups,
            activation="relu",
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            kernel_regularizer=regularizer,
            implementation=grouped_conv,
            name=layer_name,
        )

    def dense(layer_name, units, activation):
        kernel_init, bias_init = _initializers(layer_name, init, _layer_seed(seed, next(layer_index)))
        return Dense(
            units,
            activation=activation,
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            kernel_regularizer=regularizer,
            name=layer_name,
        )

    def norm(layer_name):
        if lrn:
            return LocalResponseNormalization(bias=lrn_bias, alpha=lrn_alpha,
                                              implementation=lrn_implementation, name=layer_name)
        return keras.layers.Identity(name=layer_name)

    def pool(layer_name):
        # Overlapping pooling, z = 3, s = 2 (Section 3.4).
        return keras.layers.MaxPooling2D(pool_size=3, strides=2, name=layer_name)

    images = keras.Input(shape=(image_size, image_size, 3), name="images")
    x = keras.layers.ZeroPadding2D((conv1_padding, conv1_padding), name="pad1")(images)
    x = conv("conv1", conv_filters[0], 11, strides=4, padding="valid")(x)
    x = norm("norm1")(x)
    x = pool("pool1")(x)
    x = conv("conv2", conv_filters[1], 5, layer_groups=groups)(x)
    x = norm("norm2")(x)
    x = pool("pool2")(x)
    x = conv("conv3", conv_filters[2], 3)(x)
    x = conv("conv4", conv_filters[3], 3, layer_groups=groups)(x)
    x = conv("conv5", conv_filters[4], 3, layer_groups=groups)(x)
    x = pool("pool5")(x)
    if adaptive_pool_size is not None:
        x = AdaptiveAveragePooling2D(int(adaptive_pool_size), name="avgpool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    # The dropout in front of fc{n} is drop{n-1} (the paper's drop6 and drop7).
    for index, (layer_name, units) in enumerate((("fc6", fc_units), ("fc7", fc_units), ("fc8", num_classes))):
        if layer_name in dropout_inputs_of:
            x = keras.layers.Dropout(dropout, seed=_layer_seed(seed, 49 + index), name=f"drop{5 + index}")(x)
        # fc8 gives logits: the softmax lives in the loss and in the export.
        x = dense(layer_name, units, None if layer_name == "fc8" else "relu")(x)
    logits = x
    # Kept in float32 under a mixed-precision policy so the loss and the softmax see full precision.
    if logits.dtype != "float32":
        logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(images, logits, name=name)


def feature_model(model, layer_name="fc7"):
    """A model sharing `model`'s layers that maps its images to `layer_name`'s output (fc7:
    the 4096-d features after ReLU that the paper's Section 6.1 compares), float32."""
    features = model.get_layer(layer_name).output
    if features.dtype != "float32":
        features = keras.layers.Activation("linear", dtype="float32", name=f"{layer_name}_float32")(features)
    return keras.Model(model.input, features, name=f"{model.name}_{layer_name}")


def _layer_flops(model):
    flops = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, filters = layer.output.shape
            kernel_height, kernel_width, in_per_group, _ = layer.kernel.shape
            flops.append(2 * height * width * kernel_height * kernel_width * in_per_group * filters)
        elif isinstance(layer, keras.layers.Dense):
            flops.append(2 * int(tf.size(layer.kernel)))
    return flops


def count_flops(model, *, batch_size=1):
    """Floating-point operations of one forward pass (2 per multiply-add; convs and dense)."""
    return sum(_layer_flops(model)) * batch_size


def count_training_flops(model, *, batch_size=1):
    """FLOPs of one training step: forward, plus the weight and input gradients of every
    layer (each as many as its forward) except the input gradient of the first layer,
    which nothing needs and TensorFlow does not compute."""
    flops = _layer_flops(model)
    return (3 * sum(flops) - flops[0]) * batch_size


# What a spec records of `build_alexnet`'s arguments: all but the kernel choices and seed.
# A spec written before an argument existed gets that argument's default.
_SPEC_DEFAULTS = {name: parameter.default for name, parameter in inspect.signature(build_alexnet).parameters.items()
                  if name not in ("grouped_conv", "lrn_implementation", "seed", "name")}


def complete_build_kwargs(kwargs):
    """`build_alexnet` arguments with every recorded one present (defaults filled in) and
    JSON lists back to tuples."""
    given = {key: tuple(value) if isinstance(value, list) else value for key, value in kwargs.items()}
    return {**_SPEC_DEFAULTS, **given}
