"""The evaluation-time pixel geometry of each weight set: how one encoded image becomes the
uint8 [S, S, 3] RGB crop its weights were measured on. Mean (and std) follow elsewhere, as
the run's `rgb_mean` (torchvision's std is folded into conv1 when its weights are imported).

- "paper": this project's runs. The centred 224/256 square of the shorter side, resized to S
  (the paper's centre 224 of a 256-px image; the converter already stores the shorter side
  at 256).
- "caffe": Caffe's data path for bvlc_alexnet (convert_imageset, then the TEST-phase data
  layer): the whole image warped to 256x256 by OpenCV's INTER_LINEAR (bilinear, no
  antialiasing), the centre 227 crop at offset (256 - 227) // 2.
- "torchvision": AlexNet_Weights.IMAGENET1K_V1's transforms on a PIL image: the shorter side
  to 256 (the longer one int(256 * long / short)) by PIL's antialiased bilinear, then
  CenterCrop(224) at offsets int(round((side - 224) / 2)).

The last two reproduce what PIL and OpenCV compute on the same JPEG to within a grey level
(tests/pipelines/test_preprocessing.py compares with their committed outputs); they decode
with libjpeg's accurate integer DCT, as PIL and OpenCV do. They need the original image
(convert with --resize_shorter=0 to reproduce published figures): a stored 256-px image
warped again is not what the weights were measured on.

Each convention works at other sizes S: the resize target scales by S / native crop
(256 / 227 for Caffe, 256 / 224 for torchvision).
"""

import tensorflow as tf

PAPER = "paper"
CAFFE = "caffe"
TORCHVISION = "torchvision"
PREPROCESSING = (PAPER, CAFFE, TORCHVISION)

# Each convention's resize side and the crop it was made for.
_RESIZE_AND_CROP = {CAFFE: (256, 227), TORCHVISION: (256, 224)}


def check_preprocessing(name):
    """`name` if it names a convention, else ValueError listing them."""
    if name not in PREPROCESSING:
        raise ValueError(f"Unknown preprocessing {name!r}. Expected one of {', '.join(PREPROCESSING)}.")
    return name


def resize_side(preprocessing, image_size):
    """The side the convention resizes to before cropping `image_size` (256 at its native size)."""
    resize, crop = _RESIZE_AND_CROP[preprocessing]
    return int(round(image_size * resize / crop))


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def caffe_crop(image, image_size):
    """Caffe's warp to 256x256 (bilinear, no antialiasing: OpenCV's INTER_LINEAR) and centre crop."""
    side = resize_side(CAFFE, image_size)
    warped = _to_uint8(tf.image.resize(image, [side, side], method="bilinear", antialias=False))
    offset = (side - image_size) // 2
    return warped[offset:offset + image_size, offset:offset + image_size]


def torchvision_crop(image, image_size):
    """torchvision's Resize(256) (PIL's antialiased bilinear) and CenterCrop(224)."""
    side = resize_side(TORCHVISION, image_size)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short, long = tf.minimum(height, width), tf.maximum(height, width)
    # int(256 * long / short), in float64 as Python computes it.
    new_long = tf.cast(tf.floor(side * tf.cast(long, tf.float64) / tf.cast(short, tf.float64)), tf.int32)
    new_height = tf.where(height <= width, side, new_long)
    new_width = tf.where(height <= width, new_long, side)
    resized = _to_uint8(tf.image.resize(image, tf.stack([new_height, new_width]), method="bilinear",
                                        antialias=True))
    # int(round(x)) rounds halves to even in Python, as tf.round does.
    top = tf.cast(tf.round(tf.cast(new_height - image_size, tf.float64) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_width - image_size, tf.float64) / 2.0), tf.int32)
    return resized[top:top + image_size, left:left + image_size]


def crop_of_convention(image, *, image_size, preprocessing):
    """uint8 [S, S, 3] of a decoded uint8 [H, W, 3] image under "caffe" or "torchvision"."""
    crop = {CAFFE: caffe_crop, TORCHVISION: torchvision_crop}[check_preprocessing(preprocessing)]
    return tf.ensure_shape(crop(image, image_size), [image_size, image_size, 3])
