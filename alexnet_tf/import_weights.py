r"""Imports released AlexNet weights into a run directory.

    python -m alexnet_tf.import_weights --weights=bvlc_alexnet.npy --model_dir=runs/bvlc_alexnet \
        [--class_names_file=synset_words.txt]
    python -m alexnet_tf.import_weights --weights=alexnet-owt-7be5be79.pth --model_dir=runs/torchvision

The format is told by content: Caffe's bvlc_alexnet (the caffe-tensorflow .npy) or
torchvision's AlexNet (a torch.save zip), each loaded without running any pickled code and
without PyTorch. The run directory's model takes the project's RGB input (Caffe's BGR order,
torchvision's 1/255 and std are folded into conv1; the weights' mean is recorded as the
run's) and records the crop the weights were measured with, so alexnet_tf.evaluate,
alexnet_tf.export, alexnet_tf.predict, alexnet_tf.neighbors and `alexnet_tf.train
--init_from` take it like any run and reproduce the weights' published figures.
"""

import sys

from absl import app
from absl import flags

from alexnet_tf.cli import configs

_WEIGHTS = flags.DEFINE_string("weights", None, "A bvlc_alexnet .npy (caffe-tensorflow layout) or a torchvision "
                               "AlexNet .pth (e.g. alexnet-owt-7be5be79.pth).", required=True)
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The new run directory (must not exist or be empty).",
                                 required=True)
_CLASS_NAMES_FILE = flags.DEFINE_string(
    "class_names_file", None, "One line per fc8 class, in order: 'SYNSET name' (synset_words.txt, "
    "LOC_synset_mapping.txt) or a name. Default: for 1000 classes ILSVRC-2012's wnids and names (from "
    "tensorflow-datasets), else the class indices.")


# Run directories are local (or mounted): checked when the flags are parsed.
configs.require_local_paths("model_dir")

def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from alexnet_tf.cli import console
    from alexnet_tf.weights import WeightsFileError, importing

    console.quiet_tensorflow_info()

    try:
        checkpoint = importing.import_weights(_WEIGHTS.value, _MODEL_DIR.value,
                                               class_names_file=_CLASS_NAMES_FILE.value)
    except (OSError, WeightsFileError, importing.ImportWeightsError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    print(f"Imported {_WEIGHTS.value} to {checkpoint}")
    print(f"  evaluate:  python -m alexnet_tf.evaluate --model_dir={_MODEL_DIR.value} --data_dir=DIR")
    print(f"  fine-tune: python -m alexnet_tf.train --flagfile=flags/finetune.flags "
          f"--init_from={_MODEL_DIR.value} --data_dir=DIR --model_dir=NEW_DIR")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
