import json
import os
import subprocess
import sys

import numpy as np
import pytest

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


@pytest.fixture(scope="module")
def second_run(tiny_dataset, tmp_path_factory):
    """Another tiny run of `trained_run`'s network and data (another seed): an ensemble's member."""
    model_dir = str(tmp_path_factory.mktemp("second_run") / "run")
    training.train(training.TrainConfig(
        model_dir=model_dir, data_dir=tiny_dataset, image_size=64, conv_filters=(8, 8, 16, 16, 8), fc_units=32,
        init="he", learning_rate=0.001, batch_size=5, epochs=1, steps_per_epoch=2, seed=1, evaluate_at_end=False))
    return model_dir


def _ten_crop_probabilities(model_dir, pattern):
    """[N, C] softmax of `model_dir`'s checkpoint averaged over each image's ten crops, and the
    labels, computed here from the pipeline's crops (the reference for the ensemble)."""
    import tensorflow as tf

    from alexnet_tf import run_dir
    from pipelines import dataset as datasets

    model, spec, _ = run_dir.load_model(model_dir)
    statistics = run_dir.statistics_of(spec)
    probabilities, labels = [], []
    for images, batch_labels in datasets.build_eval_dataset(datasets.Source(pattern), datasets.EvalOptions(
            batch_size=4, image_size=64, crops=10, statistics=statistics, output_dtype=tf.uint8)):
        centred = tf.cast(images, tf.float32) - tf.constant(statistics.rgb_mean, tf.float32)
        logits = model(tf.reshape(centred, [-1, 64, 64, 3]), training=False)
        probabilities.append(tf.reduce_mean(tf.reshape(tf.nn.softmax(logits), [len(images), 10, -1]), axis=1).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def _errors(probabilities, labels):
    ranked = np.argsort(-probabilities, axis=1, kind="stable")
    return float(np.mean(ranked[:, 0] != labels)), float(1.0 - np.mean((ranked[:, :5] == labels[:, None]).any(axis=1)))


def test_an_ensemble_averages_its_members_softmax_over_the_same_crops(trained_run, second_run, tiny_dataset):
    pattern = schema.split_file_pattern(tiny_dataset, "validation")
    ensemble = evaluation.evaluate(evaluation.EvalConfig(model_dir=(trained_run, second_run), eval_files=pattern,
                                                         crops=10, batch_size=30))
    (first, labels), (second, _) = (_ten_crop_probabilities(run, pattern) for run in (trained_run, second_run))
    assert (ensemble["top1_error"], ensemble["top5_error"]) == pytest.approx(_errors((first + second) / 2, labels))
    assert [(m["top1_error"], m["top5_error"]) for m in ensemble["members"]] == [
        pytest.approx(_errors(first, labels)), pytest.approx(_errors(second, labels))]
    # An ensemble of one is that run.
    alone = evaluation.evaluate(evaluation.EvalConfig(model_dir=(second_run,), eval_files=pattern, crops=10,
                                                      batch_size=20))
    assert (alone["top1_error"], alone["top5_error"]) == pytest.approx(_errors(second, labels))
    assert "members" not in alone


def test_runs_that_do_not_make_an_ensemble_are_refused_by_name(trained_run, imported_run, tiny_dataset):
    with pytest.raises(ValueError, match=f"do not make an ensemble: {imported_run} has "):
        evaluation.evaluate(evaluation.EvalConfig(model_dir=(trained_run, imported_run),
                                                  eval_files=schema.split_file_pattern(tiny_dataset, "validation")))
    with pytest.raises(ValueError, match="names a run twice"):
        evaluation.EvalConfig(model_dir=(trained_run, trained_run + "/"), eval_files="unused")


def test_evaluate_cli_writes_the_ensembles_json(trained_run, second_run, tiny_dataset, tmp_path):
    output = tmp_path / "eval.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "alexnet_tf.evaluate", f"--model_dir={trained_run},{second_run}",
                             f"--data_dir={tiny_dataset}", "--crops=10", "--batch_size=40",
                             f"--output_json={output}"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=180, check=True)
    results = json.loads(output.read_text())
    assert results["crops"] == 10 and results["num_examples"] == 15
    assert 0.0 <= results["top1_error"] <= 1.0 and results["top5_error"] <= results["top1_error"]
    assert [m["model_dir"] for m in results["members"]] == [trained_run, second_run]
    assert results["members"][0]["checkpoint"].startswith(os.path.join(trained_run, "checkpoints"))
    assert "the ensemble of 2" in result.stdout and "worst classes" in result.stdout
    assert f"Evaluating {second_run}: 100%" in result.stderr  # progress, per member
    for member in results["members"]:
        assert f"{member['top1_error']:.4f}  {member['top5_error']:.4f}  {member['checkpoint']}" in result.stdout


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


def test_an_ensemble_exports_as_one_saved_model_answering_through_tf_servings_loader(
        trained_run, second_run, imported_run, tmp_path):
    import tensorflow as tf

    from alexnet_tf import run_dir
    from alexnet_tf.serving import saved_model, session_loader
    from tests.commands import run_command

    result = run_command("alexnet_tf.export", f"--model_dir={trained_run},{second_run}", f"--output={tmp_path / 'ens'}")
    assert f"to {tmp_path / 'ens' / '1'}" in result.stdout
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    expected, features = 0.0, []
    for run in (trained_run, second_run):
        model, spec, _ = run_dir.load_model(run)
        centred = tf.cast(pixels, tf.float32) - tf.constant(run_dir.statistics_of(spec).rgb_mean, tf.float32)
        expected = expected + tf.nn.softmax(model(centred, training=False)).numpy() / 2
        features.append(model.get_layer("fc7").output.shape[-1])
    with session_loader.SessionModel(str(tmp_path / "ens" / "1")) as served:
        assert {"serving_default", "serving_pixels", "features"} <= set(served.signatures)
        answer = served.run("serving_pixels", {"images": pixels})
        np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-5, atol=1e-6)
        jpeg = tf.io.encode_jpeg(pixels[0]).numpy()
        assert served.run("features", {"image_bytes": np.array([jpeg], dtype=object)})["fc7"].shape == (1, sum(features))
    with pytest.raises(saved_model.ExportError, match=f"{imported_run} has "):
        saved_model.export_run(saved_model.ExportConfig(model_dir=(trained_run, imported_run),
                                                        export_dir=str(tmp_path / "refused")))
    with pytest.raises(saved_model.ExportError, match="ensemble exports as a SavedModel"):
        saved_model.export_run(saved_model.ExportConfig(model_dir=(trained_run, second_run), format="tflite"))
    assert not (tmp_path / "refused").exists()
