"""Every op runs eagerly and inside tf.data: the two can differ."""

import numpy as np
import pytest
import tensorflow as tf

from pipelines import augment, constants

EIGVAL = constants.IMAGENET_RGB_EIGVAL
EIGVEC = constants.IMAGENET_RGB_EIGVEC


def _both_ways(fn, *inputs):
    """fn(*inputs) eagerly and as a tf.data map; returns the two results as numpy."""
    eager = fn(*inputs)
    graph = next(iter(tf.data.Dataset.from_tensors(inputs).map(fn)))
    if isinstance(eager, tuple):
        return [e.numpy() for e in eager], [g.numpy() for g in graph]
    return eager.numpy(), graph.numpy()


def _non_square(height=48, width=80):
    # Every pixel distinct, so a crop's position can be read off its values.
    values = np.arange(height * width * 3, dtype=np.int64).reshape(height, width, 3)
    return tf.constant(values)


@pytest.mark.parametrize("seed", [(1, 2), (3, 4), (5, 6)])
def test_random_crop_and_flip_is_inside_the_central_square_and_seeded(seed):
    image = _non_square()  # 48 x 80: central square = columns 16..63
    eager, graph = _both_ways(lambda x: augment.random_crop_and_flip(x, 42, seed=seed), image)
    np.testing.assert_array_equal(eager, graph)  # stateless: same seed, same patch
    assert eager.shape == (42, 42, 3)  # round(48 * 224/256) = 42
    values = image.numpy()
    for y in range(0, 48 - 42 + 1):
        for x in range(16, 64 - 42 + 1):
            window = values[y:y + 42, x:x + 42]
            if np.array_equal(eager, window) or np.array_equal(eager, window[:, ::-1]):
                return
    raise AssertionError("the patch is not a (mirrored) window of the central square")


def test_random_crop_window_covers_the_central_square_only():
    tops, lefts = set(), set()
    for i in range(400):
        y, x, h, w = augment.random_crop_window(60, 100, seed=(i, 0)).numpy()
        assert h == w == round(60 * 224 / 256) == 52
        assert 0 <= y <= 60 - 52 and 20 <= x <= 20 + 60 - 52  # central square: x in [20, 80)
        tops.add(y)
        lefts.add(x)
    assert tops == set(range(0, 9)) and lefts == set(range(20, 29))  # every position reachable


def test_flip_gives_the_original_or_its_mirror_both_ways():
    image = _non_square(6, 9)
    seen = set()
    for i in range(40):
        eager, graph = _both_ways(lambda x: augment.random_flip(x, seed=(i, 7)), image)
        np.testing.assert_array_equal(eager, graph)
        original = np.array_equal(eager, image.numpy())
        mirror = np.array_equal(eager, image.numpy()[:, ::-1])
        assert original != mirror
        seen.add(mirror)
    assert seen == {True, False}


def test_center_crop_both_ways():
    image = _non_square(48, 80)
    eager, graph = _both_ways(lambda x: augment.center_crop(x, 42), image)
    np.testing.assert_array_equal(eager, graph)
    # 42-square centred in 48 x 80: rows 3..44, columns 19..60.
    np.testing.assert_array_equal(eager, image.numpy()[3:45, 19:61])


def test_center_crop_resizes_to_the_requested_size():
    image = tf.fill([100, 60, 3], tf.constant(7, tf.uint8))
    out = augment.center_crop(image, 32)
    assert out.shape == (32, 32, 3) and out.dtype == tf.uint8
    np.testing.assert_array_equal(out, 7)


def test_ten_crop_positions_and_mirrors_both_ways():
    image = _non_square(10, 14)
    eager, graph = _both_ways(lambda x: augment.ten_crop(x, 6), image)
    np.testing.assert_array_equal(eager, graph)
    values = image.numpy()
    expected = [values[0:6, 0:6], values[0:6, 8:14], values[4:10, 0:6], values[4:10, 8:14],
                values[2:8, 4:10]]
    assert eager.shape == (10, 6, 6, 3)
    for i, crop in enumerate(expected):
        np.testing.assert_array_equal(eager[i], crop)
        np.testing.assert_array_equal(eager[5 + i], crop[:, ::-1])


def test_pca_lighting_adds_one_offset_per_image_with_alpha_std_0_1():
    images = tf.zeros([4000, 3, 5, 3])
    eager, graph = _both_ways(
        lambda x: augment.pca_lighting(x, eigval=EIGVAL, eigvec=EIGVEC, seed=(0, 1)), images)
    np.testing.assert_allclose(eager, graph, rtol=1e-5, atol=1e-4)
    # The same offset at every pixel of an image.
    np.testing.assert_allclose(eager, np.broadcast_to(eager[:, :1, :1, :], eager.shape), atol=1e-5)
    offsets = eager[:, 0, 0, :]
    # offset = eigvec @ (alpha * eigval)  =>  alpha = (eigvec^T offset) / eigval.
    alphas = offsets @ np.array(EIGVEC) / np.array(EIGVAL)
    np.testing.assert_allclose(alphas.std(axis=0), 0.1, rtol=0.06)
    np.testing.assert_allclose(alphas.mean(axis=0), 0.0, atol=0.01)
    assert abs(np.corrcoef(alphas.T)[0, 1]) < 0.06  # independent per eigenvector
    # Images differ from each other.
    assert len(np.unique(offsets[:, 0])) > 3900


def test_pca_lighting_on_one_image_keeps_its_values_plus_the_offset():
    image = tf.random.stateless_uniform([5, 7, 3], seed=(1, 1), minval=-100, maxval=100)
    out = augment.pca_lighting(image, eigval=EIGVAL, eigvec=EIGVEC, stddev=0.1, seed=(2, 2))
    offset = (out - image).numpy()
    np.testing.assert_allclose(offset, np.broadcast_to(offset[:1, :1], offset.shape), atol=1e-4)
    assert np.abs(offset[0, 0]).max() > 0  # no clipping, a real offset
    with pytest.raises(TypeError, match="float"):
        augment.pca_lighting(tf.zeros([2, 2, 3], tf.uint8), eigval=EIGVAL, eigvec=EIGVEC)
