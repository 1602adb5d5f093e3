"""What the benchmarks share: a device's reference matmul and wall-clock timing."""

import time


def make_matmul(size, dtype="float32"):
    """(() -> None, FLOPs per call): one [size, size] matmul in `dtype` on the default device
    (a GPU if there is one), the device's reachable compute rate."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal([size, size]), dtype)
    b = tf.cast(tf.random.normal([size, size]), dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    return lambda: matmul(a, b).numpy(), 2 * size**3


def seconds_per_call(fn, calls):
    """Mean seconds of `calls` calls of fn."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls
