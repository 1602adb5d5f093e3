r"""Evaluation's speed and peak memory: one crop, the paper's ten, and an ensemble.

    python -m alexnet_tf.benchmarks.evaluation [--images=200] [--batch_size=128] [--members=5]

Writes a validation split of generated images (shorter side 256) and --members run
directories of the paper's network (random weights: speed and memory do not depend on them),
then runs `alexnet_tf.serving.evaluation.evaluate` in a fresh process per mode, each reporting
its own wall time and peak resident memory (VmHWM): --crops=1, --crops=10, and the ensemble of
--members runs with --crops=1, all at the same --batch_size; and the other inference paths:
`alexnet_tf.predict`'s library on the image files (the run exported first) and the
neighbours' feature pass over the split. Prints images/s and crops/s of each, the peak of
each, and the ratios the evaluation is held to:
  crops/s of --crops=10 / images/s of --crops=1 (goal >= 0.9: a crop costs what a centre crop does),
  images/s of the ensemble x members / images/s of one run (goal >= 0.9),
  peak of --crops=10 and of the ensemble / peak of --crops=1 (goal <= 1.25).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_IMAGES = flags.DEFINE_integer("images", 200, "Validation images to generate.", lower_bound=1)
_CLASSES = flags.DEFINE_integer("classes", 1000, "Classes of the network (fc8's width).", lower_bound=2)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Crops per forward pass (evaluate's --batch_size).",
                                   lower_bound=1)
_MEMBERS = flags.DEFINE_integer("members", 5, "Runs in the ensemble (the paper's Table 2: 5).", lower_bound=2)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side.", lower_bound=64)
# Internal: one mode in this process (the parent starts one process per mode).
_CHILD = flags.DEFINE_string("child", None, "(internal) JSON of the evaluation to time here.")


def _peak_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(spec):
    from alexnet_tf.cli import console

    console.quiet_tensorflow_info()
    from alexnet_tf.serving import evaluation

    if spec.get("mode") == "predict":
        from alexnet_tf.serving import prediction

        start = time.perf_counter()
        results = prediction.predict(prediction.PredictConfig(images=tuple(spec["files"]), saved_model=spec["saved_model"],
                                                              batch_size=spec["batch_size"], progress=False))
        print(json.dumps({"seconds": time.perf_counter() - start, "examples": len(results), "peak": _peak_rss_bytes()}))
        return
    if spec.get("mode") == "features":
        from alexnet_tf import run_dir
        from alexnet_tf.serving import retrieval

        start = time.perf_counter()
        model, run_spec, checkpoint = run_dir.load_model(spec["model_dirs"][0])
        index = retrieval.split_features(
            model, image_size=model.input.shape[1], statistics=run_dir.statistics_of(run_spec), checkpoint=checkpoint,
            file_pattern=spec["eval_files"], cache_path=spec["cache"], batch_size=spec["batch_size"], progress=False)
        print(json.dumps({"seconds": time.perf_counter() - start, "examples": len(index.labels),
                          "peak": _peak_rss_bytes()}))
        return
    config = evaluation.EvalConfig(model_dir=tuple(spec["model_dirs"]), eval_files=spec["eval_files"],
                                   crops=spec["crops"], batch_size=spec["batch_size"], strategy="default")
    start = time.perf_counter()
    results = evaluation.evaluate(config)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "examples": results["num_examples"], "peak": _peak_rss_bytes()}))


def _make_data(folder, *, images, classes):
    """The file pattern of a validation split of `images` generated images (at most `classes`
    classes), stored with shorter side 256."""
    from pipelines import conversion, synthetic

    per_class = -(-images // min(classes, images))
    synthetic.write_image_folder(os.path.join(folder, "images"), num_classes=min(classes, images),
                                 images_per_class=per_class, min_size=256, max_size=360, seed=0)
    conversion.convert_split(conversion.ConvertConfig(
        input_dir=os.path.join(folder, "images"), output_dir=os.path.join(folder, "shards"), split="validation",
        resize_shorter=256, progress=False))
    return os.path.join(folder, "shards", "validation-*")


def _make_runs(folder, *, members, classes, image_size):
    import tensorflow as tf

    from alexnet_tf import build_alexnet, run_dir
    from alexnet_tf.model.spec import AlexNetSpec
    from pipelines.dataset import DatasetStatistics

    network = AlexNetSpec(num_classes=classes, image_size=image_size)
    dirs = []
    for index in range(members):
        model_dir = os.path.join(folder, f"run{index}")
        model = build_alexnet(network, seed=index)
        tf.train.Checkpoint(model=model).write(os.path.join(model_dir, run_dir.CHECKPOINTS_DIR, "ckpt-1"))
        with open(os.path.join(model_dir, run_dir.CHECKPOINTS_DIR, "checkpoint"), "w") as f:
            f.write('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
        run_dir.write_model_spec(model_dir, network=network, class_names=[str(i) for i in range(classes)],
                                 statistics=DatasetStatistics())
        dirs.append(model_dir)
    return dirs


def _run_mode(model_dirs, eval_files, crops, batch_size, **extra):
    spec = json.dumps({"model_dirs": model_dirs, "eval_files": eval_files, "crops": crops, "batch_size": batch_size,
                       **extra})
    result = subprocess.run([sys.executable, "-m", "alexnet_tf.benchmarks.evaluation", f"--child={spec}"],
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if result.returncode:
        raise RuntimeError(f"The {crops}-crop evaluation of {len(model_dirs)} run(s) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if _CHILD.value:
        _child(json.loads(_CHILD.value))
        return 0
    from alexnet_tf.cli import console

    console.quiet_tensorflow_info()
    with tempfile.TemporaryDirectory() as folder:
        eval_files = _make_data(folder, images=_IMAGES.value, classes=_CLASSES.value)
        dirs = _make_runs(folder, members=_MEMBERS.value, classes=_CLASSES.value, image_size=_IMAGE_SIZE.value)
        batch = _BATCH_SIZE.value
        one = _run_mode(dirs[:1], eval_files, 1, batch)
        ten = _run_mode(dirs[:1], eval_files, 10, batch)
        ensemble = _run_mode(dirs, eval_files, 1, batch)
        from alexnet_tf.serving import saved_model

        export = saved_model.export_run(saved_model.ExportConfig(model_dir=dirs[0],
                                                                 export_dir=os.path.join(folder, "export"))).path
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(os.path.join(folder, "images"))
                       for name in names)
        predict = _run_mode(dirs[:1], eval_files, 1, 32, mode="predict", saved_model=export, files=files)
        features = _run_mode(dirs[:1], eval_files, 1, batch, mode="features", cache=os.path.join(folder, "f.npz"))
    images = one["examples"]
    rate = {name: images / mode["seconds"] for name, mode in (("one", one), ("ten", ten), ("ensemble", ensemble))}
    gib = 1024 ** 3
    print(f"{images} images of {_IMAGE_SIZE.value} px, {_CLASSES.value} classes, --batch_size={batch} (crops per pass)")
    print(f"--crops=1:              {rate['one']:8.1f} images/s  {rate['one']:8.1f} crops/s   peak {one['peak'] / gib:.2f} GiB")
    print(f"--crops=10:             {rate['ten']:8.1f} images/s  {10 * rate['ten']:8.1f} crops/s   "
          f"peak {ten['peak'] / gib:.2f} GiB")
    print(f"ensemble of {len(dirs)}, 1 crop: {rate['ensemble']:8.1f} images/s  {len(dirs) * rate['ensemble']:8.1f} "
          f"forward images/s   peak {ensemble['peak'] / gib:.2f} GiB")
    for label, mode in (("predict (files, batch 32)", predict), ("neighbours' features", features)):
        mode_rate = mode["examples"] / mode["seconds"]
        print(f"{label + ':':24s}{mode_rate:8.1f} images/s  ratio to --crops=1 {mode_rate / rate['one']:.2f}   "
              f"peak {mode['peak'] / gib:.2f} GiB = {mode['peak'] / one['peak']:.2f}x")
    print(f"ratio crops/s (10 crops) / images/s (1 crop):            {10 * rate['ten'] / rate['one']:.2f}  (goal >= 0.9)")
    print(f"ratio ensemble images/s x {len(dirs)} / one run's images/s:      "
          f"{len(dirs) * rate['ensemble'] / rate['one']:.2f}  (goal >= 0.9)")
    print(f"ratio peak memory 10 crops / 1 crop:                     {ten['peak'] / one['peak']:.2f}  (goal <= 1.25)")
    print(f"ratio peak memory ensemble / 1 crop:                     {ensemble['peak'] / one['peak']:.2f}  "
          "(goal <= 1.25)")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
