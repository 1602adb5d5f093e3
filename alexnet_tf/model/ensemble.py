"""Several networks as one Keras model: the paper's ensembles (Table 2, "averaging the
predictions of five similar CNNs"), for export."""

import numpy as np
import tensorflow as tf
import keras


class _Shift(keras.layers.Layer):
    """x + a constant offset (a member's mean against the ensemble's input mean)."""

    def __init__(self, offset, **kwargs):
        super().__init__(**kwargs)
        self.offset = np.asarray(offset, np.float32)

    def call(self, inputs):
        return inputs + tf.constant(self.offset)


class _LogMean(keras.layers.Layer):
    """log of the mean of probabilities: logits whose softmax is that mean."""

    def call(self, probabilities):
        return tf.math.log(tf.maximum(tf.add_n(probabilities) / len(probabilities), 1e-30))


def ensemble_model(models, rgb_means, *, name="alexnet_ensemble"):
    """(model, features model) of `models` (Keras AlexNets of the same input size and
    classes), each with its own input mean `rgb_means[i]`. Both take images centred by
    `rgb_means[0]`. The model returns logits whose softmax is the mean of the members'
    softmax outputs; the features model returns the members' fc7 features side by side."""
    images = keras.Input(shape=models[0].input.shape[1:], name="images")
    probabilities, features = [], []
    for index, (model, mean) in enumerate(zip(models, rgb_means)):
        member = keras.Model(model.input, [model.output, model.get_layer("fc7").output], name=f"member{index}")
        logits, fc7 = member(_Shift(np.subtract(rgb_means[0], mean), name=f"mean{index}")(images))
        probabilities.append(keras.layers.Softmax(name=f"softmax{index}")(logits))
        features.append(fc7)
    fc7 = keras.layers.Concatenate(name="fc7")(features) if len(features) > 1 else features[0]
    return (keras.Model(images, _LogMean(name="logits")(probabilities), name=name),
            keras.Model(images, fc7, name=f"{name}_fc7"))
