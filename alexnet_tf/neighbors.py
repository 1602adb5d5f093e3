r"""The k training images nearest to each query image in fc7 space (the paper's Figure 4).

    python -m alexnet_tf.neighbors --model_dir=runs/alexnet --data_dir=data/imagenet \
        --split=train --k=5 --output=neighbors.png query1.jpg query2.jpg

Computes the fc7 features of the split once per checkpoint (batched, progress logged) and
caches them in model_dir/features/, so a second query is fast; prints each query's k
nearest images by Euclidean distance, and writes a contact sheet: one row per query, the
query and then its neighbours with their labels and distances.
"""

import sys

from absl import app
from absl import flags

from alexnet_tf.cli import configs

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run directory (its latest checkpoint).", required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (default: the latest).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards from pipelines.convert.")
_FILES = flags.DEFINE_string("files", None, "Glob of shards (instead of --data_dir and --split).")
_SPLIT = flags.DEFINE_string("split", "train", "The split whose images are searched.")
_K = flags.DEFINE_integer("k", 5, "Neighbours per query.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "Contact sheet PNG (none without it).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Images per batch for the features.", lower_bound=1,
                                  upper_bound=65536)


# Run directories are local (or mounted): checked when the flags are parsed.
configs.require_local_paths("model_dir", "output")

def main(argv):
    queries = argv[1:]
    if not queries:
        raise app.UsageError("Name one or more query image files.")
    if bool(_DATA_DIR.value) == bool(_FILES.value):
        raise app.UsageError("Pass exactly one of --data_dir and --files.")
    from alexnet_tf.cli import console

    console.quiet_tensorflow_info()
    from alexnet_tf.serving import retrieval
    from pipelines import schema

    config = retrieval.NeighborsConfig(
        model_dir=_MODEL_DIR.value, checkpoint=_CHECKPOINT.value, split=_SPLIT.value,
        file_pattern=_FILES.value or schema.split_file_pattern(_DATA_DIR.value, _SPLIT.value),
        queries=tuple(queries), k=_K.value, output=_OUTPUT.value, batch_size=_BATCH_SIZE.value)
    try:
        results, sheet = retrieval.find_neighbors(config)
    except (OSError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    for query, neighbors in results:
        print(query)
        for rank, neighbor in enumerate(neighbors, 1):
            print(f"  {rank}. distance {neighbor.distance:10.4f}  {neighbor.label_name}  ({neighbor.filename})")
    if sheet:
        print(f"wrote {sheet}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
