r"""Top-5 classes of image files, for checking a model by hand.

    python -m alexnet_tf.predict --model_dir=runs/alexnet cat.jpg dog.png
    python -m alexnet_tf.predict --saved_model=runs/alexnet/export/1 cat.jpg

Uses the export's `serving_default` (the same preprocessing TF Serving runs); with
--model_dir it exports the latest checkpoint to a temporary folder first.
"""

import sys

from absl import app
from absl import flags

from alexnet_tf.cli import configs

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run directory (uses its latest checkpoint).")
_SAVED_MODEL = flags.DEFINE_string("saved_model", None, "An exported version folder.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per forward pass.", lower_bound=1, upper_bound=65536)


# Run directories are local (or mounted): checked when the flags are parsed.
configs.require_local_paths("model_dir")

def main(argv):
    images = argv[1:]
    if not images:
        raise app.UsageError("Name one or more image files.")
    if bool(_MODEL_DIR.value) == bool(_SAVED_MODEL.value):
        raise app.UsageError("Pass exactly one of --model_dir and --saved_model.")
    from alexnet_tf.cli import console

    console.quiet_tensorflow_info()
    from alexnet_tf.serving import prediction

    predictions = prediction.predict(prediction.PredictConfig(
        images=tuple(images), model_dir=_MODEL_DIR.value, saved_model=_SAVED_MODEL.value,
        batch_size=_BATCH_SIZE.value))
    for result in predictions:
        if result.missing:
            print(f"{result.image}: no such file", file=sys.stderr)
        elif result.error:
            print(f"{result.image}: cannot read ({result.error})")
        else:
            print(result.image)
            for rank, (probability, class_id, name) in enumerate(result.top, 1):
                print(f"  {rank}. {probability:.4f}  {class_id:4d}  {name}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
