"""What the paper reports of the network's outputs: top-1 and top-5 error, counted one way
for training, evaluation and everything else (sums that add up across replicas, batches
and workers), and the class probabilities of one or ten crops."""

import tensorflow as tf

# The paper's second figure: is the label among the five most probable classes?
TOP_K = 5


def class_probabilities(model, images):
    """Softmax of the model; for ten-crop input [B, 10, S, S, 3], averaged over the crops."""
    if images.shape.rank == 5:
        crops = tf.shape(images)[1]
        flat = tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0))
        probabilities = tf.nn.softmax(tf.cast(model(flat, training=False), tf.float32))
        return tf.reduce_mean(tf.reshape(probabilities, [tf.shape(images)[0], crops, -1]), axis=1)
    return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32))


def top_k_hits(labels, scores, top_k=TOP_K):
    """(top-1 hits, top-k hits) of a batch: float64 [B] each, 1 where the label is the best
    class / among the `top_k` best of `scores` [B, C] (logits or probabilities: the ranking
    is the same). `top_k` is capped at C."""
    labels = tf.cast(labels, tf.int32)
    top_k = min(top_k, scores.shape[-1]) if scores.shape[-1] is not None else top_k
    top1 = tf.math.in_top_k(labels, scores, 1)
    topk = tf.math.in_top_k(labels, scores, top_k)
    return tf.cast(top1, tf.float64), tf.cast(topk, tf.float64)


def batch_sums(per_example_loss, scores, labels, top_k=TOP_K):
    """[loss sum, top-1 hits, top-k hits, examples] of one batch, float64: what replicas,
    steps and workers add up; `errors_of` turns a total into the reported figures."""
    top1, topk = top_k_hits(labels, scores, top_k)
    return tf.stack([
        tf.reduce_sum(tf.cast(per_example_loss, tf.float64)),
        tf.reduce_sum(top1),
        tf.reduce_sum(topk),
        tf.cast(tf.size(labels), tf.float64),
    ])


def errors_of(totals):
    """{loss, top1_error, top5_error, num_examples} of summed `batch_sums`."""
    loss, top1, topk, count = (float(v) for v in totals)
    examples = max(count, 1.0)
    return {"loss": loss / examples, "top1_error": 1.0 - top1 / examples, "top5_error": 1.0 - topk / examples,
            "num_examples": int(count)}
