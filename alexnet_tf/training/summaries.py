"""TensorBoard for a training run: the writers and the images (conv1's filters, the paper's
Figure 3, and a grid of augmented training inputs)."""

import math
import os

import numpy as np
import tensorflow as tf

LOGS_DIR = "logs"


def _image_grid(images, columns):
    """[N, H, W, C] in [0, 1] -> [1, rows*H, columns*W, C] with 1-px gaps."""
    count, height, width, channels = images.shape
    rows = math.ceil(count / columns)
    grid = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, channels), np.float32)
    for index in range(count):
        r, c = divmod(index, columns)
        grid[r * (height + 1):r * (height + 1) + height, c * (width + 1):c * (width + 1) + width] = images[index]
    return grid[np.newaxis]


def conv1_filter_grid(model, groups=2):
    """The conv1 kernels as one image [1, H, W, 3] in [0, 1]: the report's Figure 3
    (`alexnet_tf.figures.kernel_figure`: scaled 4x, one block per tower)."""
    from alexnet_tf.figures.kernels import kernel_figure

    kernel = model.get_layer("conv1").kernel.numpy()  # [11, 11, 3, 96]
    groups = groups if kernel.shape[-1] % groups == 0 else 1
    return kernel_figure(kernel, groups=groups).image[np.newaxis].astype(np.float32) / 255.0


def _augmented_grid(images, mean):
    pixels = np.clip((np.asarray(images[:16], np.float32) + np.asarray(mean, np.float32)) / 255.0, 0, 1)
    return _image_grid(pixels, columns=8)


def create_writers(write_dir):
    return {name: tf.summary.create_file_writer(os.path.join(write_dir, LOGS_DIR, name))
            for name in ("train", "validation")}


def log_augmented_images(writers, data, statistics):
    """A grid of the first training batch's inputs, as the model sees them (mean added back):
    the uint8 crops through the training step's own flip, lighting and mean."""
    from pipelines import augment

    images, _ = next(iter(data.train_dataset(None, statistics)))
    if images.dtype == tf.uint8:
        images = augment.flip_light_centre(images, seeds=tf.constant([[1, 0], [2, 0]], tf.int64),
                                           rgb_mean=statistics.rgb_mean, eigval=statistics.rgb_eigval,
                                           eigvec=statistics.rgb_eigvec)
    with writers["train"].as_default():
        tf.summary.image("augmented_training_images", _augmented_grid(images.numpy(), statistics.rgb_mean), step=0)
