r"""Training throughput on synthetic data and on real shards, in one run.

    python -m alexnet_tf.benchmarks.training_throughput [--data_dir=data/imagenet] [--batch_size=64]
    python -m alexnet_tf.benchmarks.training_throughput --synthetic --batch_size=512 \
        --mixed_precision=bfloat16 --jit_compile      # a GPU's own rate, no input at all

Runs the training library's own step function (`alexnet_tf.training.steps`) on
  synthetic: one batch repeated (what the model alone can do), and
  real:      the full input pipeline over converted shards (generated ImageNet-sized
             shards without --data_dir),
and prints images/s of each, real / synthetic (goal >= 0.95: augmentation hidden behind
the step) and the FLOP/s reached. With --synthetic only the first runs, its batch made once
on the device (no host copy per step), and the FLOP/s are set against a matmul measured on
the same device in the run's precision: the fraction of the device's own rate, as
`alexnet_tf.benchmarks.training_step` prints it on a CPU.
"""

import tempfile
import time

from absl import app
from absl import flags

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Converted shards; default: generated.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side.")
_STEPS = flags.DEFINE_integer("steps", 16, "Timed steps (after 2 warm-up steps); fewer read noisily.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "Images to generate without --data_dir.")
_STRATEGY = flags.DEFINE_string("strategy", "auto", "As alexnet_tf.train.")
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "Compile the replica step with XLA.")
_SYNTHETIC = flags.DEFINE_bool(
    "synthetic", False, "Only the synthetic run, its batch made on the device, against the device's matmul rate.")
_MIXED_PRECISION = flags.DEFINE_enum("mixed_precision", "none", ["none", "float16", "bfloat16"], "As alexnet_tf.train.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 8192, "Side of the reference matmul (with --synthetic).")


class _DeviceBatch:
    """An iterator standing for the input: `next` gives each replica one batch made once on
    its device, which the traced step captures: no host copy per step."""

    def __init__(self, config, num_classes, strategy):
        import tensorflow as tf

        per_replica = config.batch_size // strategy.num_replicas_in_sync

        def make(context):
            # uint8 crops, as the input pipeline gives them: the step flips, lights and centres them.
            seed = context.replica_id_in_sync_group
            images = tf.random.stateless_uniform([per_replica, config.image_size, config.image_size, 3],
                                                 seed=(seed, 0), maxval=256, dtype=tf.int32)
            labels = tf.random.stateless_uniform([per_replica], seed=(seed, 1), maxval=num_classes, dtype=tf.int32)
            return tf.cast(images, tf.uint8), labels

        self.batch = strategy.experimental_distribute_values_from_function(make)

    def __iter__(self):
        return self

    def __next__(self):
        return self.batch


def measure(config, *, steps, on_device=False):
    """Images/s of `steps` training steps of `config` (after two warm-up steps); with
    `on_device`, of one synthetic batch made on the device."""
    import tensorflow as tf

    from alexnet_tf.training import loop, strategies
    from alexnet_tf.training import steps as training_steps
    from alexnet_tf.training.start import plan_start

    strategy = strategies.create_strategy(config.strategy)
    start = plan_start(config)
    loop._set_precision(config.mixed_precision)
    try:
        model, optimizer, _ = loop.build_training_objects(config, strategy, start)
    finally:
        loop._set_precision("none")
    if on_device:
        iterator = _DeviceBatch(config, start.data.num_classes, strategy)
    else:  # the training loop's own input: the strategy's distributed dataset
        iterator = iter(loop._training_input(config, strategy, start, 0))
    train_steps, _ = training_steps.make_steps(
        model=model, optimizer=optimizer, strategy=strategy, config=config, statistics=start.statistics)
    one = tf.constant(1)
    for _ in range(2):
        train_steps(iterator, one).numpy()
    began = time.perf_counter()
    for _ in range(steps):
        train_steps(iterator, one).numpy()
    return steps * config.batch_size / (time.perf_counter() - began), model, strategy


def _device_rate(config):
    """(images/s, FLOP/s of the step, FLOP/s of the device's matmul) of synthetic steps made
    on the device, in the run's precision."""
    import tensorflow as tf

    from alexnet_tf.benchmarks.timing import make_matmul, seconds_per_call
    from alexnet_tf.model.alexnet import count_training_flops
    from alexnet_tf.training import strategies

    rate, model, strategy = measure(config, steps=_STEPS.value, on_device=True)
    step_flops = rate * count_training_flops(model)
    dtype = {"none": "float32", "float16": "float16", "bfloat16": "bfloat16"}[config.mixed_precision]
    matmul, flops = make_matmul(_MATMUL_SIZE.value, dtype)
    matmul()
    # One device's matmul: per replica, the step's share is rate / replicas.
    matmul_rate = flops / seconds_per_call(matmul, 10) * strategy.num_replicas_in_sync
    print(f"{strategies.describe(strategy)}; TensorFlow {tf.__version__}")
    return rate, step_flops, matmul_rate, dtype


def main(argv):
    del argv
    from alexnet_tf import training
    from alexnet_tf.model.alexnet import count_training_flops
    from pipelines import dataset as datasets

    if _SYNTHETIC.value:
        with tempfile.TemporaryDirectory(prefix="train_benchmark_run_") as model_dir:
            config = training.TrainConfig(
                model_dir=model_dir, synthetic=True, num_classes=1000, batch_size=_BATCH_SIZE.value,
                image_size=_IMAGE_SIZE.value, strategy=_STRATEGY.value, jit_compile=_JIT_COMPILE.value,
                mixed_precision=_MIXED_PRECISION.value, steps_per_epoch=1000)
            rate, step_flops, matmul_rate, dtype = _device_rate(config)
        print(f"batch {_BATCH_SIZE.value} x {_IMAGE_SIZE.value}px, mixed_precision={_MIXED_PRECISION.value}, "
              f"jit_compile={_JIT_COMPILE.value}")
        print(f"synthetic data on the device: {rate:8.1f} images/s ({step_flops / 1e9:.1f} GFLOP/s)")
        print(f"matmul ({_MATMUL_SIZE.value}^2 {dtype}): {matmul_rate / 1e9:.1f} GFLOP/s; "
              f"ratio step/matmul: {step_flops / matmul_rate:.2f}")
        return

    from pipelines import synthetic

    def generate(scratch):
        synthetic.write_converted_dataset(scratch, num_images=_NUM_IMAGES.value)
        return f"{scratch}/shards"

    with synthetic.given_or_generated(_DATA_DIR.value, generate, prefix="train_benchmark_") as data_dir, \
            tempfile.TemporaryDirectory(prefix="train_benchmark_run_") as model_dir:
        num_classes = datasets.load_statistics(data_dir).num_classes
        common = dict(model_dir=model_dir, batch_size=_BATCH_SIZE.value,
                      image_size=_IMAGE_SIZE.value, strategy=_STRATEGY.value, jit_compile=_JIT_COMPILE.value,
                      num_classes=num_classes, steps_per_epoch=1000, shuffle_buffer=1000)
        synthetic_rate, model, _ = measure(training.TrainConfig(synthetic=True, **common), steps=_STEPS.value)
        real_rate, _, _ = measure(training.TrainConfig(data_dir=data_dir, **common), steps=_STEPS.value)
    flops_per_image = count_training_flops(model)
    print(f"batch {_BATCH_SIZE.value} x {_IMAGE_SIZE.value}px, {num_classes} classes, "
          f"jit_compile={_JIT_COMPILE.value}")
    print(f"synthetic data: {synthetic_rate:8.1f} images/s ({synthetic_rate * flops_per_image / 1e9:.1f} GFLOP/s)")
    print(f"real shards:    {real_rate:8.1f} images/s ({real_rate * flops_per_image / 1e9:.1f} GFLOP/s)")
    print(f"ratio real / synthetic: {real_rate / synthetic_rate:.2f} (goal >= 0.95)")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
