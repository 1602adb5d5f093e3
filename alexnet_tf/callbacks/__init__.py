"""Keras callbacks for `model.fit`: `ReduceLROnPlateau`, the paper's learning-rate rule."""

from alexnet_tf.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau

__all__ = ["ReduceLROnPlateau"]
