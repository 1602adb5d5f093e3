"""Weights made elsewhere: Caffe's bvlc_alexnet .npy (caffe-tensorflow layout) read safely
into `build_alexnet` and written back (`caffe`), and imported into a run directory that
every command takes (`importing`)."""

from alexnet_tf.weights.caffe import CaffeWeightsError, import_caffe_npy, load_caffe_npy

__all__ = ["CaffeWeightsError", "import_caffe_npy", "load_caffe_npy"]
