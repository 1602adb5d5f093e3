r"""Training throughput on synthetic data and on real shards, in one run.

    python -m alexnet_tf.benchmarks.training_throughput [--data_dir=data/imagenet] [--batch_size=64]

Runs the training library's own step function (`alexnet_tf.training.steps`) on
  synthetic: one in-memory batch repeated (what the model alone can do), and
  real:      the full input pipeline over converted shards (generated ImageNet-sized
             shards without --data_dir),
and prints images/s of each, real / synthetic (goal >= 0.95: augmentation hidden behind
the step) and the FLOP/s reached.
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


def measure(config, *, steps):
    """Images/s of `steps` training steps of `config` (after two warm-up steps)."""
    import tensorflow as tf

    from alexnet_tf.training import loop, strategies
    from alexnet_tf.training import steps as training_steps
    from alexnet_tf.training.start import plan_start

    strategy = strategies.create_strategy(config.strategy)
    start = plan_start(config)
    model, optimizer, _ = loop.build_training_objects(config, strategy, start)
    iterator = iter(start.data.train_dataset(tf.distribute.InputContext(1, 0, 1), start.statistics))
    train_steps, _ = training_steps.make_steps(
        model=model, optimizer=optimizer, strategy=strategy, config=config)
    one = tf.constant(1)
    for _ in range(2):
        train_steps(iterator, one).numpy()
    began = time.perf_counter()
    for _ in range(steps):
        train_steps(iterator, one).numpy()
    return steps * config.batch_size / (time.perf_counter() - began), model


def main(argv):
    del argv
    from alexnet_tf import training
    from alexnet_tf.model.alexnet import count_training_flops
    from pipelines import dataset as datasets

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
        synthetic_rate, model = measure(training.TrainConfig(synthetic=True, **common), steps=_STEPS.value)
        real_rate, _ = measure(training.TrainConfig(data_dir=data_dir, **common), steps=_STEPS.value)
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
