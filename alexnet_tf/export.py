r"""Exports a run's checkpoint as a versioned SavedModel for TF Serving, its weights as a
bvlc_alexnet .npy, or a TensorFlow Lite model.

    python -m alexnet_tf.export --model_dir=runs/alexnet [--export_dir=DIR] [--version=N]
    python -m alexnet_tf.export --model_dir=runs/alexnet --format=npy [--output=FILE]
    python -m alexnet_tf.export --model_dir=runs/alexnet --format=tflite [--quantize=dynamic] [--output=FILE]
    python -m alexnet_tf.export --model_dir=runs/a,runs/b,runs/c --output=DIR   # their ensemble

Writes export_dir/<version> (default: model_dir/export, the next integer version)
atomically; an existing version is an error unless --overwrite. --format=npy writes the
caffe-tensorflow layout ('conv1'..'fc8' -> [kernel, bias], conv1 in Caffe's BGR order) that
other tools and alexnet_tf.import_weights read (default: model_dir/alexnet_weights.npy).
--format=tflite writes the pixel signature (uint8 [N, S, S, 3] in, probabilities out);
--quantize=dynamic stores int8 weights (default: model_dir/alexnet.tflite, alexnet_dynamic.tflite).
Several runs export as their ensemble (the paper's Table 2): one SavedModel version in DIR/<N>
with the same signatures, the members' softmax averaged, `features` their fc7 side by side.
"""

import sys

from absl import app
from absl import flags

from alexnet_tf.cli import configs

FLAGS = flags.FLAGS

_MODEL_DIR = flags.DEFINE_list("model_dir", None, "Run directory of alexnet_tf.train; several, comma-separated: "
                               "their ensemble, as one SavedModel.", required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (default: the latest).")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Base folder TF Serving watches (default: model_dir/export).")
_VERSION = flags.DEFINE_integer("version", None, "Version number (default: the next).", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing version.")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", 64_000_000, "Largest width x height accepted.", lower_bound=1)
_FORMAT = flags.DEFINE_enum("format", "saved_model", ["saved_model", "npy", "tflite"],
                            "saved_model: for TF Serving; npy: the weights in the bvlc_alexnet layout; "
                            "tflite: TensorFlow Lite (uint8 images in, probabilities out).")
_QUANTIZE = flags.DEFINE_enum("quantize", "none", ["none", "dynamic"],
                              "With --format=tflite: dynamic stores the weights as int8 (about 1/4 the size).")
_OUTPUT = flags.DEFINE_string("output", None, "With --format=npy or tflite: the file (default: model_dir/"
                              "alexnet_weights.npy, alexnet.tflite or alexnet_dynamic.tflite); for an ensemble: "
                              "the SavedModel's base folder (as --export_dir).")


# Run directories are local (or mounted): checked when the flags are parsed.
configs.require_local_paths("model_dir", "export_dir", "output")

def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from alexnet_tf.cli import console

    console.quiet_tensorflow_info()
    from alexnet_tf.serving import saved_model

    dirs = FLAGS.model_dir
    config = configs.config_from_flags(saved_model.ExportConfig, FLAGS,
                                       model_dir=dirs[0] if len(dirs) == 1 else tuple(dirs))
    try:
        result = saved_model.export_run(config)
    except (FileNotFoundError, FileExistsError, saved_model.ExportError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    if config.format == "npy":
        print(f"Wrote the weights of {result.checkpoint} to {result.path}")
        if result.differences_from_caffe:
            print(f"WARNING: this model differs from Caffe's bvlc_alexnet in "
                  f"{', '.join(result.differences_from_caffe)}: the file holds its weights, but Caffe's "
                  "network (and alexnet_tf.import_weights) computes another function with them.", file=sys.stderr)
    elif config.format == "tflite":
        print(f"Wrote {result.checkpoint} as TensorFlow Lite ({config.quantize} quantization) to {result.path}")
    else:
        print(f"Exported {result.checkpoint} to {result.path}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
