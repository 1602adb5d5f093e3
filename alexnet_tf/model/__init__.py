"""The network: `AlexNetSpec` (every architectural choice as one value: the paper's, Caffe's and
torchvision's) and `build_alexnet` that builds it, the paper's layers (`layers`), the CPU speed kernels they may run on and the
portable swap for export (`kernels`), the learning rule (`optimizer`) and the top-1 / top-5
counting (`metrics`)."""

from alexnet_tf.model.alexnet import (WEIGHTED_LAYERS, build_alexnet, count_flops, count_training_flops,
                                      feature_model)
from alexnet_tf.model.layers import Dense, GroupedConv2D, LocalResponseNormalization, portable_kernels
from alexnet_tf.model.optimizer import MomentumSGD, WeightDecay, folds_every_loss, losses_to_differentiate
from alexnet_tf.model.spec import MIN_IMAGE_SIZE, AlexNetSpec

__all__ = [
    "AlexNetSpec",
    "Dense",
    "GroupedConv2D",
    "LocalResponseNormalization",
    "MIN_IMAGE_SIZE",
    "MomentumSGD",
    "WEIGHTED_LAYERS",
    "WeightDecay",
    "build_alexnet",
    "count_flops",
    "count_training_flops",
    "feature_model",
    "folds_every_loss",
    "losses_to_differentiate",
    "portable_kernels",
]
