r"""Top-5 classes of image files, for checking a model by hand.

    python -m alexnet_tf.predict --model_dir=runs/alexnet cat.jpg dog.png
    python -m alexnet_tf.predict --saved_model=runs/alexnet/export/1 cat.jpg

Uses the export's `serving_default` (the same preprocessing TF Serving runs); with
--model_dir it exports the latest checkpoint to a temporary folder first.
"""

import os
import sys
import tempfile

from absl import app
from absl import flags

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run directory (uses its latest checkpoint).")
_SAVED_MODEL = flags.DEFINE_string("saved_model", None, "An exported version folder.")


def main(argv):
    images = argv[1:]
    if not images:
        raise app.UsageError("Name one or more image files.")
    if bool(_MODEL_DIR.value) == bool(_SAVED_MODEL.value):
        raise app.UsageError("Pass exactly one of --model_dir and --saved_model.")
    from alexnet_tf import console

    console.quiet_tensorflow_info()
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch:
        path = _SAVED_MODEL.value
        if path is None:
            from alexnet_tf import exporting, runs

            model, spec, _ = runs.load_model(_MODEL_DIR.value)
            path = exporting.export_model(model, export_dir=scratch, class_names=spec.get("class_names", ()),
                                          statistics=runs.statistics_of(spec), version=1)
        serve = tf.saved_model.load(path).signatures["serving_default"]
        for image in images:
            if not os.path.isfile(image):
                print(f"{image}: no such file", file=sys.stderr)
                continue
            with open(image, "rb") as f:
                try:
                    outputs = serve(image_bytes=tf.constant([f.read()]))
                except tf.errors.InvalidArgumentError as error:
                    print(f"{image}: cannot read ({error.message.splitlines()[0]})")
                    continue
            print(image)
            for rank, (class_id, name) in enumerate(zip(outputs["classes"][0].numpy(),
                                                        outputs["class_names"][0].numpy()), 1):
                probability = outputs["probabilities"][0][class_id].numpy()
                print(f"  {rank}. {probability:.4f}  {class_id:4d}  {name.decode()}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
