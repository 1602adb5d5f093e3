"""Weights made elsewhere: Caffe's bvlc_alexnet .npy (caffe-tensorflow layout) read safely
into `build_alexnet` and written back (`caffe`), torchvision's AlexNet .pth read without
PyTorch (`torchvision`), and either imported into a run directory that every command takes
(`importing`). Both readers raise `WeightsFileError` for a file they refuse, and both (and
`alexnet_tf.applications`) put what they read into a model with `assign_weights`."""

from alexnet_tf.weights.caffe import CaffeWeightsError, import_caffe_npy, load_caffe_npy
from alexnet_tf.weights.errors import WeightsFileError
from alexnet_tf.weights.layer_weights import assign_weights
from alexnet_tf.weights.torchvision import TorchvisionWeightsError, import_torchvision_pth, load_torchvision_pth

__all__ = ["CaffeWeightsError", "TorchvisionWeightsError", "WeightsFileError", "assign_weights", "import_caffe_npy",
           "import_torchvision_pth", "load_caffe_npy", "load_torchvision_pth"]
