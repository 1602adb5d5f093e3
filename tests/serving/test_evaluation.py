import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from alexnet_tf import build_alexnet
from alexnet_tf.model import metrics
from alexnet_tf.serving import evaluation
from pipelines import schema

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ten_crop_probabilities_are_the_mean_of_the_single_crop_softmaxes():
    model = build_alexnet(7, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=16, seed=0, init="he")
    crops = tf.random.stateless_uniform([3, 10, 64, 64, 3], seed=(1, 2), minval=-100, maxval=100)
    averaged = metrics.class_probabilities(model, crops).numpy()
    singles = np.stack([tf.nn.softmax(model(crops[:, i], training=False)).numpy() for i in range(10)])
    np.testing.assert_allclose(averaged, singles.mean(axis=0), rtol=1e-5, atol=1e-7)


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
