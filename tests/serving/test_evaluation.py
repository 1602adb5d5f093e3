import json
import os
import subprocess
import sys


from alexnet_tf import training
from alexnet_tf.serving import evaluation
from pipelines import schema

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_example_counts_once_under_any_batch_and_strategy(trained_run, tiny_dataset):
    pattern = schema.split_file_pattern(tiny_dataset, "validation")
    results = [evaluation.evaluate(evaluation.EvalConfig(model_dir=trained_run, eval_files=pattern,
                                                         batch_size=batch, strategy=strategy))
               for batch, strategy in ((4, "default"), (15, "default"), (4, "mirrored"), (6, "mirrored"))]
    assert [r["num_examples"] for r in results] == [15, 15, 15, 15]
    for r in results[1:]:
        assert r["top1_error"] == results[0]["top1_error"] and r["top5_error"] == results[0]["top5_error"]
    assert sum(1 for _ in results[0]["per_class_top1_error"]) == 5


def test_evaluate_cli_writes_the_json(trained_run, tiny_dataset, tmp_path):
    output = tmp_path / "eval.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "alexnet_tf.evaluate", f"--model_dir={trained_run}",
                             f"--data_dir={tiny_dataset}", "--crops=10", "--batch_size=4",
                             f"--output_json={output}"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=180, check=True)
    results = json.loads(output.read_text())
    assert results["crops"] == 10 and results["num_examples"] == 15
    assert 0.0 <= results["top1_error"] <= 1.0 and results["top5_error"] <= results["top1_error"]
    assert results["checkpoint"].startswith(os.path.join(trained_run, "checkpoints"))
    assert "top-1 error" in result.stdout and "worst classes" in result.stdout


def test_per_class_results_are_keyed_by_class_id(tmp_path):
    """ImageNet names two classes "crane" (n02012849 the bird, n03126707 the machine): keyed by
    name, one would vanish from the results."""
    from pipelines import conversion, synthetic

    synthetic.write_image_folder(tmp_path / "train", num_classes=3, images_per_class=4, min_size=60, max_size=80, seed=0)
    synthetic.write_image_folder(tmp_path / "val", num_classes=3, images_per_class=2, min_size=60, max_size=80, seed=1,
                                 flat_with_labels=str(tmp_path / "labels.txt"))
    names = tmp_path / "names.txt"
    names.write_text("n00000000 crane\nn00000001 crane\nn00000002 tench\n")
    shards = tmp_path / "shards"
    for split, folder, extra in (("train", "train", {}), ("validation", "val", {"labels_file": str(tmp_path / "labels.txt")})):
        conversion.convert_split(conversion.ConvertConfig(
            input_dir=str(tmp_path / folder), output_dir=str(shards), split=split, resize_shorter=73, num_shards=1,
            workers=1, progress=False, class_names_file=str(names), **extra))
    run = tmp_path / "run"
    training.train(training.TrainConfig(model_dir=str(run), data_dir=str(shards), image_size=64,
                                        conv_filters=(8, 8, 8, 8, 8), fc_units=16, batch_size=4, epochs=1,
                                        steps_per_epoch=1, evaluate_at_end=False))
    results = evaluation.evaluate(evaluation.EvalConfig(
        model_dir=str(run), eval_files=schema.split_file_pattern(str(shards), "validation"), batch_size=4))
    per_class = results["per_class_top1_error"]
    assert sorted(per_class) == ["n00000000", "n00000001", "n00000002"]
    assert [per_class[c]["name"] for c in sorted(per_class)] == ["crane", "crane", "tench"]
    assert all(per_class[c]["num_examples"] == 2 for c in per_class)
    wrong = sum(per_class[c]["top1_error"] * 2 for c in per_class)
    assert wrong == round(results["top1_error"] * 6)


def test_a_shard_damaged_after_conversion_is_named(trained_run, tiny_dataset, tmp_path):
    import shutil

    import pytest

    from pipelines import audit

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    shard = sorted(data.glob("validation-*"))[0]
    stat = shard.stat()
    with open(shard, "r+b") as f:  # in place: same size and times, the manifest still trusts it
        f.seek(stat.st_size // 2)
        f.write(bytes(64))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(audit.ShardError, match=rf"(?s)changed after they were written.*{shard}:.*pipelines.convert"):
        evaluation.evaluate(evaluation.EvalConfig(model_dir=trained_run, eval_files=str(data / "validation-*"),
                                                  batch_size=4))
