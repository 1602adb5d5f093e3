"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) with TensorFlow / Keras."""

# TensorFlow before Keras: the other order can end in a circular import at start-up.
import tensorflow as tf  # noqa: F401

from alexnet_tf.caffe import load_caffe_npy
from alexnet_tf.layers import GroupedConv2D, LocalResponseNormalization, portable_kernels
from alexnet_tf.model import MIN_IMAGE_SIZE, build_alexnet, count_flops, count_training_flops, feature_model
from alexnet_tf.optimizer import MomentumSGD, WeightDecay

__all__ = [
    "GroupedConv2D",
    "LocalResponseNormalization",
    "MIN_IMAGE_SIZE",
    "MomentumSGD",
    "WeightDecay",
    "build_alexnet",
    "count_flops",
    "count_training_flops",
    "feature_model",
    "load_caffe_npy",
    "portable_kernels",
]
