"""AlexNet the keras.applications way: `AlexNet(weights="torchvision" | "bvlc_alexnet" |
PATH | None, ...)`, `preprocess_input(x, weights=...)`, `decode_predictions(preds, top=5)`,
and `load_image(path, weights=...)` for each weight set's own crop."""

from alexnet_tf.applications.alexnet import (WEIGHT_SETS, AlexNet, decode_predictions, load_image, preprocess_input,
                                             weights_file)

__all__ = ["WEIGHT_SETS", "AlexNet", "decode_predictions", "load_image", "preprocess_input", "weights_file"]
