"""Weights of named layers into a model: what every weight set's reader (Caffe's, torchvision's)
and `alexnet_tf.applications` do once a file has been read into {layer: (kernel, bias)}."""


def assign_weights(model, weights):
    """Copies {layer name: (kernel, bias)} into the model's layers of the same names."""
    for name, (kernel, bias) in weights.items():
        layer = model.get_layer(name)
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
