"""The paper's augmentation and evaluation crops as small pure ops.

Each works eagerly, inside tf.data and inside a compiled step, on one image [H, W, C] (and
`random_flip` and `pca_lighting` also on a batch [B, H, W, C], each image its own draw):
training runs flip and lighting once per batch, with the mean, in `flip_light_centre`, on the
device inside the step (`alexnet_tf.training.steps`) or for float32 pipelines in
`pipelines.dataset.make_train_normalizer`. Random ops take a stateless `seed` (a shape [2]
integer tensor): the same seed gives the same result, so a run is reproducible and its input
is rebuilt from (seed, step) on a resume, with no iterator state. `seed=None` draws from
TensorFlow's global generator instead, for quick eager use.

The crop geometry follows the paper: images stored with the shorter side 256, random 224
patches of the central 256x256 square for training; for other sizes every crop is
`CROP_FRACTION` (224/256) of the stored shorter side.
"""

import tensorflow as tf

from pipelines.constants import CROP_FRACTION, PCA_LIGHTING_STDDEV

# Every stateless draw names its algorithm. Even so, XLA's generator gives other numbers than
# TensorFlow's kernels for the same seed: draws are therefore made outside compiled (XLA)
# functions (`draw_flips_and_alphas`), and only their application is compiled.
RNG_ALGORITHM = "philox"


def _seed_or_random(seed):
    if seed is None:
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    return tf.convert_to_tensor(seed)


def split_seed(seed, num):
    """`num` independent stateless seeds [num, 2] from one."""
    return tf.random.experimental.stateless_split(_seed_or_random(seed), num, alg=RNG_ALGORITHM)


def crop_size_for(height, width, crop_fraction=CROP_FRACTION):
    """Side of the paper's crop for an image of this size: crop_fraction of the shorter side."""
    shorter = tf.minimum(height, width)
    size = tf.cast(tf.round(tf.cast(shorter, tf.float32) * crop_fraction), tf.int32)
    return tf.clip_by_value(size, 1, shorter)


def random_crop_window(height, width, *, crop_fraction=CROP_FRACTION, seed=None):
    """[y, x, size, size]: a random square of the paper's size inside the central square.

    Args:
      height, width: size of the image (scalars).
      crop_fraction: crop side over the shorter side (the paper's 224/256).
      seed: stateless seed [2], or None.

    Returns:
      An int32 [4] window for `tf.io.decode_and_crop_jpeg` / `crop_to_window`.
    """
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    shorter = tf.minimum(height, width)
    size = crop_size_for(height, width, crop_fraction)
    # Offsets inside the central shorter x shorter square, uniform over its positions.
    offsets = tf.random.stateless_uniform(
        [2], seed=_seed_or_random(seed), minval=0, maxval=shorter - size + 1, dtype=tf.int32, alg=RNG_ALGORITHM)
    top = (height - shorter) // 2 + offsets[0]
    left = (width - shorter) // 2 + offsets[1]
    return tf.stack([top, left, size, size])


def center_crop_window(height, width, *, crop_fraction=CROP_FRACTION):
    """[y, x, size, size]: the centred square of the paper's size."""
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    size = crop_size_for(height, width, crop_fraction)
    return tf.stack([(height - size) // 2, (width - size) // 2, size, size])


def crop_to_window(image, window):
    """image[y:y+h, x:x+w] for a window [y, x, h, w]."""
    return image[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]


def resize_square(image, size):
    """Resizes a square-cropped image to size x size, keeping its dtype (no-op if it fits)."""
    image = tf.convert_to_tensor(image)

    def resized():
        out = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
        if image.dtype == tf.uint8:
            out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
        return tf.cast(out, image.dtype)

    shape = tf.shape(image)
    fits = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    out = tf.cond(fits, lambda: image, resized)
    return tf.ensure_shape(out, [size, size, image.shape[-1]])


def random_flip(image, *, seed=None):
    """The image or its horizontal mirror, with probability 1/2 each.

    Args:
      image: [H, W, C], or a batch [B, H, W, C] (each image flipped or not on its own).
      seed: stateless seed [2], or None.

    Returns:
      The same shape and dtype.
    """
    image = tf.convert_to_tensor(image)
    flips = tf.random.stateless_uniform(tf.shape(image)[:-3], seed=_seed_or_random(seed), alg=RNG_ALGORITHM) < 0.5
    return tf.where(flips[..., tf.newaxis, tf.newaxis, tf.newaxis], tf.reverse(image, axis=[-2]), image)


def random_crop_and_flip(image, size, *, crop_fraction=CROP_FRACTION, seed=None):
    """The paper's training patch of a decoded image: random crop in the central square, flip.

    Args:
      image: [H, W, C] of any dtype.
      size: output side S (the crop is resized to S if crop_fraction of the shorter side
        is not S).
      crop_fraction: crop side over the shorter side.
      seed: stateless seed [2], or None.

    Returns:
      [S, S, C], the input's dtype.
    """
    crop_seed, flip_seed = tf.unstack(split_seed(seed, 2))
    shape = tf.shape(image)
    window = random_crop_window(shape[0], shape[1], crop_fraction=crop_fraction, seed=crop_seed)
    patch = resize_square(crop_to_window(image, window), size)
    return random_flip(patch, seed=flip_seed)


def center_crop(image, size, *, crop_fraction=CROP_FRACTION):
    """The centred crop_fraction square of the shorter side, resized to size x size."""
    shape = tf.shape(image)
    window = center_crop_window(shape[0], shape[1], crop_fraction=crop_fraction)
    return resize_square(crop_to_window(image, window), size)


def ten_crop(image, size):
    """The paper's ten test patches: four corners, centre, and their horizontal mirrors.

    Args:
      image: [H, W, C] with H, W >= size (the paper: the 256x256 central square).
      size: patch side (the paper: 224).

    Returns:
      [10, size, size, C]: top-left, top-right, bottom-left, bottom-right, centre, then the
      mirrors of those five in the same order.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    tf.debugging.assert_greater_equal(
        tf.minimum(height, width), size, message=f"ten_crop needs an image of at least {size}x{size}")
    tops = [0, 0, height - size, height - size, (height - size) // 2]
    lefts = [0, width - size, 0, width - size, (width - size) // 2]
    crops = tf.stack([image[t:t + size, l:l + size] for t, l in zip(tops, lefts)])
    crops = tf.ensure_shape(crops, [5, size, size, image.shape[-1]])
    return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def lighting_offset(alpha, *, eigval, eigvec):
    """eigvec @ (alpha * eigval): the RGB offset for alphas [..., 3]."""
    eigval = tf.constant(eigval, tf.float32) if not tf.is_tensor(eigval) else tf.cast(eigval, tf.float32)
    eigvec = tf.constant(eigvec, tf.float32) if not tf.is_tensor(eigvec) else tf.cast(eigvec, tf.float32)
    # offset_c = sum_i eigvec[c, i] * alpha_i * eigval_i  (one eigenvector per column)
    return tf.linalg.matvec(eigvec, tf.cast(alpha, tf.float32) * eigval)


def pca_lighting(image, *, eigval, eigvec, stddev=PCA_LIGHTING_STDDEV, seed=None):
    """The paper's PCA lighting noise: one RGB offset per image, the same for all its pixels.

    Adds `eigvec @ (alpha * eigval)` with alpha ~ N(0, stddev) per image, in the units of
    `image` (no clipping: the input is float, possibly already centred).

    Args:
      image: float [H, W, 3], or a batch [B, H, W, 3] (one alpha per image).
      eigval: [3] eigenvalues, descending (dataset_info.json's `rgb_eigval`).
      eigvec: [3, 3], one unit eigenvector per column (`rgb_eigvec`).
      stddev: standard deviation of alpha (the paper: 0.1).
      seed: stateless seed [2], or None.

    Returns:
      The image plus its offset, float32.
    """
    image = tf.convert_to_tensor(image)
    if image.dtype.is_integer:
        raise TypeError(
            f"pca_lighting expects a float image (offsets are not integers). Received: {image.dtype}")
    batch_shape = tf.shape(image)[:-3]
    alpha = tf.random.stateless_normal(
        tf.concat([batch_shape, [3]], 0), seed=_seed_or_random(seed), stddev=stddev, alg=RNG_ALGORITHM)
    offset = lighting_offset(alpha, eigval=eigval, eigvec=eigvec)
    return tf.cast(image, tf.float32) + offset[..., tf.newaxis, tf.newaxis, :]


def draw_flips_and_alphas(batch_size, seeds, stddev=PCA_LIGHTING_STDDEV, flip=True):
    """(flips bool [B], alphas float32 [B, 3]): the draws of `flip_light_centre` for seeds
    [2, 2] (the same as `random_flip`'s with `seeds[0]` and `pca_lighting`'s with `seeds[1]`).
    `flip=False` mirrors nothing (the ablation; the draws are made all the same, so the
    lighting is the flipping run's). Run it outside XLA: XLA's generator draws other numbers."""
    flips = tf.random.stateless_uniform([batch_size], seed=seeds[0], alg=RNG_ALGORITHM) < (0.5 if flip else 0.0)
    alphas = tf.random.stateless_normal([batch_size, 3], seed=seeds[1], stddev=stddev, alg=RNG_ALGORITHM)
    return flips, alphas


def apply_flip_light_centre(images, flips, alphas, *, rgb_mean, eigval, eigvec):
    """A uint8 batch [B, S, S, 3] mirrored where `flips`, cast to float32, minus `rgb_mean`,
    plus each image's lighting offset for its `alphas`: one pass, fused where XLA compiles it."""
    flipped = tf.where(flips[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.reverse(images, axis=[-2]), images)
    offsets = lighting_offset(alphas, eigval=eigval, eigvec=eigvec)
    return (tf.cast(flipped, tf.float32) - tf.cast(rgb_mean, tf.float32)) + offsets[:, tf.newaxis, tf.newaxis, :]


def flip_light_centre(images, *, seeds, rgb_mean, eigval, eigvec, stddev=PCA_LIGHTING_STDDEV):
    """The training augmentation after the crop, for a uint8 batch [B, S, S, 3]: each image
    mirrored with probability 1/2 (`random_flip`, seed `seeds[0]`), cast to float32, minus
    `rgb_mean`, plus its own lighting offset (`pca_lighting`, seed `seeds[1]`): the input
    pipeline's float32 batches and the training step's on-device augmentation both run it,
    the draws on TensorFlow's kernels and the rest where XLA may fuse it."""
    flips, alphas = draw_flips_and_alphas(tf.shape(images)[0], seeds, stddev)
    return apply_flip_light_centre(images, flips, alphas, rgb_mean=rgb_mean, eigval=eigval, eigvec=eigvec)
