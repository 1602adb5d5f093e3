"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) with TensorFlow / Keras.

The public names live here; the commands a user types sit beside this file
(`python -m alexnet_tf.train | evaluate | export | predict | import_weights | neighbors`),
and one sub-package per job below it:

- `model/`: the network, the paper's layers, the CPU speed kernels, the optimizer, metrics;
- `weights/`: weights made elsewhere (Caffe's bvlc_alexnet .npy, torchvision's .pth) read safely;
- `applications/`: the keras.applications-style `AlexNet(weights=...)`, `preprocess_input`,
  `decode_predictions`;
- `training/`: the training library (config, data, start, steps, state, loop, ...);
- `serving/`: run directories, evaluation, the SavedModel export, nearest neighbours;
- `callbacks/`: `ReduceLROnPlateau` for `model.fit`, the loop's schedule as a Keras callback;
- `benchmarks/`: one command per thing measured (`python -m alexnet_tf.benchmarks.NAME`);
- `cli/`: what the commands share (console output, flags to configs).
"""

# TensorFlow before Keras: the other order can end in a circular import at start-up.
import tensorflow as tf  # noqa: F401

from alexnet_tf.model import (MIN_IMAGE_SIZE, AlexNetSpec, GroupedConv2D, LocalResponseNormalization, MomentumSGD,
                              WeightDecay, build_alexnet, count_flops, count_training_flops, feature_model,
                              portable_kernels)
from alexnet_tf.weights import load_caffe_npy, load_torchvision_pth

__all__ = [
    "AlexNetSpec",
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
    "load_torchvision_pth",
    "portable_kernels",
]
