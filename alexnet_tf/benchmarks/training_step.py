r"""Training-step speed of the paper's model against this machine's matmul rate.

    python -m alexnet_tf.benchmarks.training_step [--batch_size=64] [--image_size=224] [--steps=5] [--nostock]

Prints the seconds per SGD step, the FLOP/s it reaches (`count_training_flops`: forward,
and the weight and input gradients except conv1's input gradient) and the FLOP/s of a large
float32 matmul measured in the same process, the machine's reachable limit, and their ratio.
The step is the training library's: `MomentumSGD` applying the model's `WeightDecay`
inside its update (--nofold_weight_decay: through the tape instead), and the layers'
"auto" kernels. With --stock (the default) the same network is also timed on stock
kernels, as a baseline in the same process: TensorFlow's LRN and LRNGrad, two-tower
convolutions, Keras' L2 regularizer and SGD.
"""

from absl import app
from absl import flags

from alexnet_tf.benchmarks.timing import make_matmul, seconds_per_call

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per training step.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per round (after 2 warm-up steps).")
_GROUPS = flags.DEFINE_integer("groups", 2, "1 or 2 (the paper's towers).")
_GROUPED_CONV = flags.DEFINE_enum(
    "grouped_conv", "auto", ["auto", "towers", "native", "keras"],
    "How grouped convolutions run (GroupedConv2D implementation); 'keras' is Keras' own.",
)
_LRN_IMPLEMENTATION = flags.DEFINE_enum(
    "lrn_implementation", "auto", ["auto", "native", "fused"],
    "How LRN runs (LocalResponseNormalization implementation).",
)
_LRN = flags.DEFINE_bool("lrn", True, "Build the model with LRN (--nolrn: identities, an ablation).")
_FOLD_WEIGHT_DECAY = flags.DEFINE_bool(
    "fold_weight_decay", True, "Apply the weight decay inside MomentumSGD's update, as the "
    "training library does (--nofold_weight_decay: through the tape, as an L2 term).")
_STOCK = flags.DEFINE_bool("stock", True, "Also time the step on stock kernels (the baseline).")
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "Compile the step with XLA.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 4096, "Side of the reference matmul.")
_ROUNDS = flags.DEFINE_integer(
    "rounds", 3, "Rounds; each times the matmul, then the step(s). The best round of each "
    "counts: on a shared machine the slow rounds measure the neighbours, not the code.")


def make_train_step(model, optimizer, *, batch_size, image_size, jit_compile):
    """() -> None: one step of `optimizer` on `model` (loss plus `model.losses`, unless the
    optimizer applies them itself), random data."""
    import tensorflow as tf
    import keras

    from alexnet_tf.model.optimizer import losses_to_differentiate

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    images = tf.random.uniform([batch_size, image_size, image_size, 3], -128.0, 128.0)
    labels = tf.random.uniform([batch_size], 0, model.output.shape[-1], dtype=tf.int32)

    @tf.function(jit_compile=jit_compile)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            regularization = losses_to_differentiate(model, optimizer)
            if regularization:
                loss += tf.add_n(regularization)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return lambda: train_step(images, labels).numpy()


def _build_stock(network):
    """The same network on stock kernels, with Keras' own L2 regularizer (the same value as
    the model's `WeightDecay`) and SGD."""
    import keras

    from alexnet_tf.model.alexnet import build_alexnet

    model = build_alexnet(network, grouped_conv="towers", lrn_implementation="native")
    for variable in model.trainable_variables:
        if variable.regularizer is not None:
            variable.regularizer = keras.regularizers.L2(variable.regularizer.weight_decay / 2.0)
    return model, keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)


def main(argv):
    del argv
    from alexnet_tf.model.alexnet import build_alexnet, count_training_flops
    from alexnet_tf.model.optimizer import MomentumSGD
    from alexnet_tf.model.spec import AlexNetSpec

    network = AlexNetSpec(num_classes=1000, image_size=_IMAGE_SIZE.value, groups=_GROUPS.value, lrn=_LRN.value)
    step_kwargs = dict(batch_size=_BATCH_SIZE.value, image_size=_IMAGE_SIZE.value,
                       jit_compile=_JIT_COMPILE.value)
    model = build_alexnet(network, grouped_conv=_GROUPED_CONV.value,
                          lrn_implementation=_LRN_IMPLEMENTATION.value)
    step_flops = count_training_flops(model, batch_size=_BATCH_SIZE.value)
    matmul, matmul_flops = make_matmul(_MATMUL_SIZE.value)
    optimizer = MomentumSGD(learning_rate=0.01, momentum=0.9, fold_weight_decay=_FOLD_WEIGHT_DECAY.value)
    steps = {"train step": make_train_step(model, optimizer, **step_kwargs)}
    if _STOCK.value:
        stock_model, stock_optimizer = _build_stock(network)
        steps["stock kernels"] = make_train_step(stock_model, stock_optimizer, **step_kwargs)
    for fn in (matmul, *steps.values()):  # compile and warm up
        seconds_per_call(fn, 2)
    seconds = {name: [] for name in ("matmul", *steps)}
    for _ in range(_ROUNDS.value):
        seconds["matmul"].append(seconds_per_call(matmul, 10))
        for name, fn in steps.items():
            seconds[name].append(seconds_per_call(fn, _STEPS.value))
    best = {name: min(values) for name, values in seconds.items()}
    reference = matmul_flops / best["matmul"]

    print(f"model: groups={_GROUPS.value} lrn={_LRN.value} grouped_conv={_GROUPED_CONV.value} "
          f"lrn_implementation={_LRN_IMPLEMENTATION.value} jit_compile={_JIT_COMPILE.value} "
          f"params={model.count_params():,}")
    print(f"best of {_ROUNDS.value} rounds ({_STEPS.value} steps each); rounds: "
          + "; ".join(f"{name} " + " ".join(f"{s:.3f}" for s in values) + " s"
                      for name, values in seconds.items()))
    print(f"matmul ({_MATMUL_SIZE.value}^2 float32): {reference / 1e9:.1f} GFLOP/s")
    for name in steps:
        achieved = step_flops / best[name]
        print(f"{name + ':':15s} batch {_BATCH_SIZE.value} x {_IMAGE_SIZE.value}px: {best[name]:.3f} s/step, "
              f"{_BATCH_SIZE.value / best[name]:.1f} images/s, {achieved / 1e9:.1f} GFLOP/s "
              f"({step_flops / 1e9:.1f} GFLOP per step), ratio model/matmul: {achieved / reference:.2f}")
    if _STOCK.value:
        print(f"speed-up over stock kernels: {best['stock kernels'] / best['train step']:.2f}x")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
