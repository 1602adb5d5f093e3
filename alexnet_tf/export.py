r"""Exports a run's checkpoint as a versioned SavedModel for TF Serving.

    python -m alexnet_tf.export --model_dir=runs/alexnet [--export_dir=DIR] [--version=N]

Writes export_dir/<version> (default: model_dir/export, the next integer version)
atomically; an existing version is an error unless --overwrite.
"""

import os
import sys

from absl import app
from absl import flags

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run directory of alexnet_tf.train.", required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (default: the latest).")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Base folder TF Serving watches (default: model_dir/export).")
_VERSION = flags.DEFINE_integer("version", None, "Version number (default: the next).", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing version.")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", 64_000_000, "Largest width x height accepted.", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from alexnet_tf import exporting, runs

    try:
        model, spec, checkpoint = runs.load_model(_MODEL_DIR.value, _CHECKPOINT.value)
        path = exporting.export_model(
            model, export_dir=_EXPORT_DIR.value or os.path.join(_MODEL_DIR.value, "export"),
            class_names=spec.get("class_names", ()), statistics=runs.statistics_of(spec),
            version=_VERSION.value, overwrite=_OVERWRITE.value, max_pixels=_MAX_PIXELS.value)
    except (FileNotFoundError, exporting.ExportError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    print(f"Exported {checkpoint} to {path}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
