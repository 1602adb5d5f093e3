r"""Top-1 / top-5 error of a run's checkpoint on the validation split.

    python -m alexnet_tf.evaluate --model_dir=runs/alexnet --data_dir=data/imagenet [--crops=10]
    python -m alexnet_tf.evaluate --model_dir=runs/a,runs/b,runs/c --data_dir=data/imagenet --crops=10

Writes --output_json (default: model_dir/eval_crops{1,10}.json) with top1_error,
top5_error, num_examples, crops, checkpoint and the per-class top-1 errors. Several runs
are evaluated as the paper's ensembles are (Table 2): their softmax outputs averaged; each
member's figures are printed and written too (default: the first run's
eval_ensemble_crops{1,10}.json).
"""

import os
import sys

from absl import app
from absl import flags

from alexnet_tf.cli import configs

_MODEL_DIR = flags.DEFINE_list("model_dir", None, "Run directory of alexnet_tf.train; several, comma-separated: "
                               "their ensemble.", required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (default: the latest).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder of validation shards (pipelines.convert).")
_EVAL_FILES = flags.DEFINE_string("eval_files", None, "Glob of shards (instead of --data_dir).")
_SPLIT = flags.DEFINE_string("split", "validation", "Split to evaluate in --data_dir.")
_CROPS = flags.DEFINE_enum("crops", "1", ["1", "10"], "1: centre crop; 10: the paper's ten crops.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Crops per forward pass (global): the images of a batch, "
                                   "a tenth of them with --crops=10.", lower_bound=1,
                                  upper_bound=65536)
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Where to write the results.")
_WORST_CLASSES = flags.DEFINE_integer("worst_classes", 5, "How many of the worst classes to list.", lower_bound=0)
_STRATEGY = flags.DEFINE_enum("strategy", "auto", ["auto", "default", "one_device", "mirrored", "multi_worker", "tpu"],
                              "tf.distribute strategy, as for training.")
_NUM_VIRTUAL_CPUS = flags.DEFINE_integer("num_virtual_cpus", 0, "Split the CPU into this many devices.", lower_bound=0)


# Run directories are local (or mounted): checked when the flags are parsed.
configs.require_local_paths("model_dir", "output_json")

def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if bool(_DATA_DIR.value) == bool(_EVAL_FILES.value):
        raise app.UsageError("Pass exactly one of --data_dir and --eval_files.")
    from alexnet_tf.cli import console

    console.quiet_tensorflow_info()
    from pipelines import schema

    eval_files = _EVAL_FILES.value or schema.split_file_pattern(_DATA_DIR.value, _SPLIT.value)
    from alexnet_tf.serving import evaluation
    from alexnet_tf.training import strategies

    config = evaluation.EvalConfig(
        model_dir=tuple(_MODEL_DIR.value), eval_files=eval_files, checkpoint=_CHECKPOINT.value,
        crops=int(_CROPS.value), batch_size=_BATCH_SIZE.value, strategy=_STRATEGY.value,
        num_virtual_cpus=_NUM_VIRTUAL_CPUS.value)
    try:
        results = evaluation.evaluate(config)
    except (FileNotFoundError, ValueError, strategies.StrategyError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    ensemble = len(config.model_dirs) > 1
    output = _OUTPUT_JSON.value or os.path.join(
        config.model_dirs[0], f"eval_{'ensemble_' if ensemble else ''}crops{config.crops}.json")
    schema.write_json_atomically(output, results)
    print(f"examples     {results['num_examples']}  ({config.crops} crop{'s' if config.crops > 1 else ''})")
    if ensemble:
        print("             top-1   top-5")
        for member in results["members"]:
            print(f"  {member['top1_error']:.4f}  {member['top5_error']:.4f}  {member['checkpoint']}")
        print(f"  {results['top1_error']:.4f}  {results['top5_error']:.4f}  the ensemble of {len(config.model_dirs)}")
    else:
        print(f"checkpoint   {results['checkpoint']}")
        print(f"top-1 error  {results['top1_error']:.4f}")
        print(f"top-5 error  {results['top5_error']:.4f}")
    worst = sorted(results["per_class_top1_error"].items(),
                   key=lambda item: -item[1]["top1_error"])[:_WORST_CLASSES.value]
    if worst:
        print("worst classes (top-1 error):")
        for class_id, result in worst:
            name = f"  {result['name']}" if result["name"] != class_id else ""
            print(f"  {result['top1_error']:.3f}  {class_id}{name}")
    print(f"wrote {output}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
