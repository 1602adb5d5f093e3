r"""Training-step speed of the paper's model against this machine's matmul rate.

    python -m alexnet_tf.benchmark [--batch_size=64] [--image_size=224] [--steps=5]

Prints the seconds per SGD step, the FLOP/s it reaches (`count_training_flops`: forward,
and the weight and input gradients except conv1's input gradient) and the FLOP/s of a large
float32 matmul measured in the same process, the machine's reachable limit, and their ratio.
"""

import time

from absl import app
from absl import flags

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per training step.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (after 2 warm-up steps).")
_GROUPS = flags.DEFINE_integer("groups", 2, "1 or 2 (the paper's towers).")
_GROUPED_CONV = flags.DEFINE_enum(
    "grouped_conv", "auto", ["auto", "towers", "native", "keras"],
    "How grouped convolutions run (GroupedConv2D implementation); 'keras' is Keras' own.",
)
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "Compile the step with XLA.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 4096, "Side of the reference matmul.")


def measure_matmul_flops(size, *, repeats=10):
    """FLOP/s of a [size, size] float32 matmul, the machine's reachable compute rate."""
    import tensorflow as tf

    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul(a, b).numpy()
    seconds = (time.perf_counter() - start) / repeats
    return 2 * size**3 / seconds


def measure_train_step(model, *, batch_size, image_size, steps, jit_compile):
    """Seconds per SGD-momentum step of `model` on random data."""
    import tensorflow as tf
    import keras

    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    images = tf.random.uniform([batch_size, image_size, image_size, 3], -128.0, 128.0)
    labels = tf.random.uniform([batch_size], 0, model.output.shape[-1], dtype=tf.int32)

    @tf.function(jit_compile=jit_compile)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)) + tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    for _ in range(2):
        train_step(images, labels).numpy()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(images, labels).numpy()
    return (time.perf_counter() - start) / steps


def main(argv):
    del argv
    from alexnet_tf.model import build_alexnet, count_training_flops

    model = build_alexnet(1000, image_size=_IMAGE_SIZE.value, groups=_GROUPS.value,
                          grouped_conv=_GROUPED_CONV.value)
    matmul_flops = measure_matmul_flops(_MATMUL_SIZE.value)
    step_seconds = measure_train_step(
        model,
        batch_size=_BATCH_SIZE.value,
        image_size=_IMAGE_SIZE.value,
        steps=_STEPS.value,
        jit_compile=_JIT_COMPILE.value,
    )
    step_flops = count_training_flops(model, batch_size=_BATCH_SIZE.value)
    achieved = step_flops / step_seconds
    print(f"model: groups={_GROUPS.value} grouped_conv={_GROUPED_CONV.value} "
          f"jit_compile={_JIT_COMPILE.value} params={model.count_params():,}")
    print(f"train step: batch {_BATCH_SIZE.value} x {_IMAGE_SIZE.value}px: "
          f"{step_seconds:.3f} s/step, {_BATCH_SIZE.value / step_seconds:.1f} images/s")
    print(f"model FLOP/s: {achieved / 1e9:.1f} GFLOP/s ({step_flops / 1e9:.1f} GFLOP per step)")
    print(f"matmul FLOP/s ({_MATMUL_SIZE.value}^2 float32): {matmul_flops / 1e9:.1f} GFLOP/s")
    print(f"ratio model/matmul: {achieved / matmul_flops:.2f}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
