"""The one image decoder: encoded bytes (JPEG, PNG, BMP, GIF) to uint8 RGB, whole or a window.

The audit checks that a record decodes with it, training decodes each random patch with it,
evaluation its centre or ten crops, and the weight sets' own crops (`pipelines.preprocessing`)
their whole images, so what the audit passes is what the pipelines can read.
"""

import tensorflow as tf

from pipelines import augment


def decode_rgb(encoded, window_fn=None, *, exact_dct=False):
    """uint8 [H, W, 3] of an encoded image, or only the window `window_fn(height, width)`
    (a [y, x, h, w] int32 tensor) of it.

    JPEGs go through libjpeg, a window by `tf.io.decode_and_crop_jpeg`, which skips the
    blocks outside it; other formats (a PNG in a foreign shard) are decoded whole and cropped,
    so they do not crash the pipeline.

    Args:
      encoded: a scalar string tensor.
      window_fn: None (the whole image), or (height, width) -> [y, x, h, w].
      exact_dct: libjpeg's accurate integer DCT, as PIL and OpenCV decode, for crops that must
        equal a weight set's own pipeline; default TensorFlow's (faster) choice.
    """
    dct_method = "INTEGER_ACCURATE" if exact_dct else ""

    def jpeg():
        if window_fn is None:
            return tf.io.decode_jpeg(encoded, channels=3, dct_method=dct_method)
        shape = tf.io.extract_jpeg_shape(encoded)
        return tf.io.decode_and_crop_jpeg(encoded, window_fn(shape[0], shape[1]), channels=3, dct_method=dct_method)

    def other():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        if window_fn is None:
            return image
        shape = tf.shape(image)
        return augment.crop_to_window(image, window_fn(shape[0], shape[1]))

    return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
