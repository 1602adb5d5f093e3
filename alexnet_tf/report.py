r"""The paper's figures from a run, as one page that opens from disk.

    python -m alexnet_tf.report --model_dir=runs/alexnet --data_dir=data/imagenet

Writes model_dir/report/index.html and beside it: Figure 3 (the conv1 kernels, the towers
apart), Figure 4 left (validation images with their top-5 classes as bars) and right (queries
and their nearest training images in fc7 space, the features cached as alexnet_tf.neighbors
caches them), and the learning curves with each learning-rate reduction (read from the run's
TensorBoard events and checkpoint; an imported run has none and the page says so), with the
final figures and worst classes of the run's evaluation JSON.
"""

import sys

from absl import app
from absl import flags

from alexnet_tf.cli import configs

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run directory (trained, fine-tuned or imported).", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards from pipelines.convert (validation and train splits).",
                                required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (default: the latest).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Images per batch for the training split's features.",
                                   lower_bound=1, upper_bound=65536)

configs.require_local_paths("model_dir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from alexnet_tf.cli import console

    console.quiet_tensorflow_info()
    from alexnet_tf import figures

    try:
        page = figures.write_report(figures.ReportConfig(model_dir=_MODEL_DIR.value, data_dir=_DATA_DIR.value,
                                                         checkpoint=_CHECKPOINT.value, batch_size=_BATCH_SIZE.value))
    except (OSError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    print(f"wrote {page}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
