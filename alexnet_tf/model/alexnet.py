"""The AlexNet of Krizhevsky, Sutskever and Hinton (2012) as one Keras functional factory."""

import tensorflow as tf
import keras

from alexnet_tf.model.layers import AdaptiveAveragePooling2D, Dense, GroupedConv2D, LocalResponseNormalization
from alexnet_tf.model.optimizer import WeightDecay
from alexnet_tf.model.spec import AlexNetSpec

# Section 5 of the paper: weights ~ N(0, 0.01); biases 1 in conv2, conv4, conv5 and the
# hidden fully connected layers ("accelerates the early stages of learning by providing
# the ReLUs with positive inputs"), 0 elsewhere.
PAPER_WEIGHT_STDDEV = 0.01
_PAPER_UNIT_BIAS_LAYERS = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})

# The layers with weights, in order (Caffe's bvlc_alexnet names them the same).
WEIGHTED_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def _initializers(layer_name, init, seed):
    if init == "he":
        return keras.initializers.HeNormal(seed=seed), keras.initializers.Zeros()
    bias = 1.0 if layer_name in _PAPER_UNIT_BIAS_LAYERS else 0.0
    kernel = keras.initializers.RandomNormal(mean=0.0, stddev=PAPER_WEIGHT_STDDEV, seed=seed)
    return kernel, keras.initializers.Constant(bias)


def _layer_seed(seed, index):
    return None if seed is None else seed + index


def build_alexnet(spec=None, /, *, grouped_conv="auto", lrn_implementation="auto", seed=None, name="alexnet",
                  **options):
    """Builds the paper's network: five convolutional and three fully connected layers.

    `build_alexnet(AlexNetSpec(...))` builds a spec; the keyword form is its shorthand:
    `build_alexnet(10, image_size=227, lrn_bias=1.0)` is `build_alexnet(AlexNetSpec(
    num_classes=10, image_size=227, lrn_bias=1.0))`.

    Args:
      spec: an `AlexNetSpec`, or the number of classes (default 1000) with `options` giving
        the spec's other fields (`AlexNetSpec` documents each).
      grouped_conv: `GroupedConv2D` implementation ("auto", "towers" or "native").
      lrn_implementation: `LocalResponseNormalization` implementation ("auto", "native"
        or "fused").
      seed: optional integer making the initial weights reproducible.
      name: the model's name.
      **options: `AlexNetSpec` fields, with an integer or no `spec` only.

    Returns:
      A `keras.Model` mapping float images [B, S, S, 3] to logits [B, num_classes].

    Raises:
      ValueError: a field the network cannot be built with (see `AlexNetSpec`), or both a
        spec and options.
    """
    if isinstance(spec, AlexNetSpec):
        if options:
            raise ValueError(f"Pass an AlexNetSpec or its fields as keywords, not both. Received: spec={spec} "
                             f"and {sorted(options)}. Use spec.replace({', '.join(sorted(options))}=...) instead.")
    elif spec is None:
        spec = AlexNetSpec(**options)
    else:
        spec = AlexNetSpec(num_classes=spec, **options)
    return _build(spec, grouped_conv=grouped_conv, lrn_implementation=lrn_implementation, seed=seed, name=name)


def _build(spec, *, grouped_conv, lrn_implementation, seed, name):
    regularizer = WeightDecay(spec.weight_decay) if spec.weight_decay else None
    layer_index = iter(range(100))

    def conv(layer_name, filters, kernel_size, *, strides=1, padding="same", layer_groups=1):
        kernel_init, bias_init = _initializers(layer_name, spec.init, _layer_seed(seed, next(layer_index)))
        return GroupedConv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            groups=layer_groups,
            activation=spec.activation,
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            kernel_regularizer=regularizer,
            implementation=grouped_conv,
            name=layer_name,
        )

    def dense(layer_name, units, activation):
        kernel_init, bias_init = _initializers(layer_name, spec.init, _layer_seed(seed, next(layer_index)))
        return Dense(
            units,
            activation=activation,
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            kernel_regularizer=regularizer,
            name=layer_name,
        )

    def norm(layer_name):
        if spec.lrn:
            return LocalResponseNormalization(bias=spec.lrn_bias, alpha=spec.lrn_alpha,
                                              implementation=lrn_implementation, name=layer_name)
        return keras.layers.Identity(name=layer_name)

    def pool(layer_name):
        # Overlapping pooling, z = 3, s = 2 (Section 3.4); or non-overlapping, z = s = 2.
        return keras.layers.MaxPooling2D(pool_size=spec.pool_size, strides=2, name=layer_name)

    images = keras.Input(shape=(spec.image_size, spec.image_size, 3), name="images")
    x = keras.layers.ZeroPadding2D((spec.conv1_padding, spec.conv1_padding), name="pad1")(images)
    x = conv("conv1", spec.conv_filters[0], 11, strides=4, padding="valid")(x)
    x = norm("norm1")(x)
    x = pool("pool1")(x)
    x = conv("conv2", spec.conv_filters[1], 5, layer_groups=spec.groups)(x)
    x = norm("norm2")(x)
    x = pool("pool2")(x)
    for layer_name, filters, layer_groups in (("conv3", spec.conv_filters[2], 1),
                                              ("conv4", spec.conv_filters[3], spec.groups),
                                              ("conv5", spec.conv_filters[4], spec.groups)):
        layer = conv(layer_name, filters, 3, layer_groups=layer_groups)  # (drawn anyway: the seeds stay)
        if layer_name not in spec.removed_layers:
            x = layer(x)
    x = pool("pool5")(x)
    if spec.adaptive_pool_size is not None:
        x = AdaptiveAveragePooling2D(spec.adaptive_pool_size, name="avgpool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    # The dropout in front of fc{n} is drop{n-1} (the paper's drop6 and drop7).
    widths = (("fc6", spec.fc_units), ("fc7", spec.fc_units), ("fc8", spec.num_classes))
    for index, (layer_name, units) in enumerate(widths):
        if layer_name in spec.dropout_inputs_of:
            x = keras.layers.Dropout(spec.dropout, seed=_layer_seed(seed, 49 + index), name=f"drop{5 + index}")(x)
        # fc8 gives logits: the softmax lives in the loss and in the export.
        x = dense(layer_name, units, None if layer_name == "fc8" else spec.activation)(x)
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
