"""The one top-1 / top-5 counting that training, evaluation and the benchmarks share."""

import numpy as np
import tensorflow as tf

from alexnet_tf import build_alexnet
from alexnet_tf.model import metrics


def test_top_k_hits_equal_a_brute_force_ranking():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(64, 12)).astype(np.float32)
    labels = rng.integers(0, 12, size=64)
    top1, top5 = metrics.top_k_hits(tf.constant(labels), tf.constant(scores))
    ranks = (scores > scores[np.arange(64), labels][:, None]).sum(axis=1)  # classes scored higher
    np.testing.assert_array_equal(top1.numpy(), (ranks == 0).astype(np.float64))
    np.testing.assert_array_equal(top5.numpy(), (ranks < 5).astype(np.float64))
    assert 0 < top1.numpy().sum() < top5.numpy().sum() < 64


def test_top_k_is_capped_at_the_number_of_classes():
    # Three classes: every label is among the "top 5".
    scores = tf.constant([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    top1, top5 = metrics.top_k_hits(tf.constant([2, 0]), scores)
    np.testing.assert_array_equal(top1.numpy(), [0.0, 1.0])
    np.testing.assert_array_equal(top5.numpy(), [1.0, 1.0])


def test_batch_sums_add_up_across_batches_to_the_errors():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(30, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=30)
    losses = rng.uniform(size=30)
    whole = metrics.batch_sums(losses, scores, labels).numpy()
    parts = sum(metrics.batch_sums(losses[i:i + 7], scores[i:i + 7], labels[i:i + 7]).numpy() for i in range(0, 30, 7))
    np.testing.assert_allclose(parts, whole)
    errors = metrics.errors_of(whole)
    best = scores.argmax(axis=1)
    assert errors["num_examples"] == 30
    assert errors["top1_error"] == np.mean(best != labels)
    np.testing.assert_allclose(errors["loss"], losses.mean())
    assert errors["top5_error"] <= errors["top1_error"]


def test_ten_crop_probabilities_are_the_mean_of_the_single_crop_softmaxes():
    model = build_alexnet(7, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=16, seed=0, init="he")
    crops = tf.random.stateless_uniform([3, 10, 64, 64, 3], seed=(1, 2), minval=-100, maxval=100)
    averaged = metrics.class_probabilities(model, crops).numpy()
    singles = np.stack([tf.nn.softmax(model(crops[:, i], training=False)).numpy() for i in range(10)])
    np.testing.assert_allclose(averaged, singles.mean(axis=0), rtol=1e-5, atol=1e-7)
