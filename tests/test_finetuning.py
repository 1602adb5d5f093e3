"""Importing bvlc_alexnet weights into a run directory, and fine-tuning from them."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import build_alexnet, caffe, finetuning, runs, training
from alexnet_tf.optimizer import folds_every_loss
from caffe_reference import TINY_CLASSES, TINY_FC, TINY_FILTERS, caffe_forward, random_caffe_blobs, write_caffe_file
from pipelines import conversion, schema, synthetic
from pipelines import dataset as datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
# The tiny weights' architecture, as flags (a fine-tune must be given the weights' own).
TINY_ARCHITECTURE = [f"--conv_filters={','.join(map(str, TINY_FILTERS))}", f"--fc_units={TINY_FC}"]


def _cli(module, *args, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "bvlc_alexnet.npy"
    write_caffe_file(path)
    return str(path)


@pytest.fixture(scope="module")
def imported_run(weights_file, tmp_path_factory):
    names = tmp_path_factory.mktemp("names") / "synset_words.txt"
    names.write_text("".join(f"n{i:08d} class number {i}\n" for i in range(TINY_CLASSES)))
    model_dir = str(tmp_path_factory.mktemp("imported") / "bvlc")
    finetuning.import_weights(weights_file, model_dir, class_names_file=str(names))
    return model_dir


@pytest.fixture(scope="module")
def folder_227(tmp_path_factory):
    """Shards of 3 generated classes stored with shorter side 260 (227-px crops need no resize)."""
    root = tmp_path_factory.mktemp("folder_227")
    synthetic.write_image_folder(root / "train", num_classes=3, images_per_class=6, min_size=260,
                                 max_size=300, seed=0)
    synthetic.write_image_folder(root / "val", num_classes=3, images_per_class=2, min_size=260,
                                 max_size=300, seed=1, flat_with_labels=str(root / "labels.txt"))
    for split, folder, extra in (("train", "train", {}), ("validation", "val", {"labels_file": str(root / "labels.txt")})):
        conversion.convert_split(conversion.ConvertConfig(
            input_dir=str(root / folder), output_dir=str(root / "shards"), split=split, resize_shorter=260,
            num_shards=1, workers=1, progress=False, **extra))
    return str(root / "shards")


def test_imported_run_directory_is_a_run_with_caffes_function(imported_run, weights_file):
    spec = runs.read_model_spec(imported_run)
    assert spec["build_alexnet"]["image_size"] == 227 and spec["build_alexnet"]["lrn_bias"] == 1.0
    assert spec["rgb_mean"] == pytest.approx(caffe.CAFFE_RGB_MEAN)
    assert spec["class_names"][:2] == ["class number 0", "class number 1"]
    assert spec[finetuning.IMPORTED_FROM]["weights"] == os.path.abspath(weights_file)
    model, _, checkpoint = runs.load_model(imported_run)
    assert checkpoint.endswith("ckpt-0")
    expected, _ = caffe.import_caffe_npy(weights_file)
    for name in caffe.LAYERS:
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), expected.get_layer(name).kernel.numpy())
    # Its flags.txt names the weights' architecture for a fine-tune.
    flags_text = open(os.path.join(imported_run, "flags.txt")).read()
    assert f"--init_from={imported_run}" in flags_text and "--image_size=227" in flags_text
    assert "--conv_filters=8,16,12,12,8" in flags_text


def test_the_evaluation_pipeline_on_an_imported_run_gives_caffes_logits(imported_run, folder_227):
    # What alexnet_tf.evaluate runs on an imported run: the run's model and its recorded mean,
    # through the evaluation pipeline. Caffe gets the same centre crops, in BGR minus its mean.
    model, spec, _ = runs.load_model(imported_run)
    pattern = schema.split_file_pattern(folder_227, "validation")
    images, _ = next(iter(datasets.build_dataset(pattern, training=False, batch_size=6, image_size=227,
                                                 statistics=runs.statistics_of(spec))))
    pixels = []
    for record in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))):
        encoded = tf.io.parse_single_example(record, schema.training_feature_spec())[schema.IMAGE_ENCODED]
        pixels.append(datasets.decode_for_eval(encoded, image_size=227).numpy())
    bgr = np.stack(pixels)[..., ::-1].astype(np.float32) - np.asarray(caffe.CAFFE_BGR_MEAN, np.float32)
    expected = caffe_forward(random_caffe_blobs(seed=0), bgr.transpose(0, 3, 1, 2))  # the weights_file blobs
    np.testing.assert_allclose(model(images, training=False).numpy(), expected,
                               atol=2e-4 * np.abs(expected).max(), rtol=1e-4)


def test_import_refuses_a_folder_in_use_and_bad_class_names(weights_file, imported_run, tmp_path):
    before = sorted(os.listdir(imported_run))
    with pytest.raises(finetuning.ImportWeightsError, match="exists and is not empty"):
        finetuning.import_weights(weights_file, imported_run)
    assert sorted(os.listdir(imported_run)) == before
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    with pytest.raises(finetuning.ImportWeightsError, match="names 2 classes; the weights have 7"):
        finetuning.import_weights(weights_file, str(tmp_path / "new"), class_names_file=str(names))
    assert not (tmp_path / "new").exists()


def test_training_into_an_imported_folder_is_refused(imported_run, tiny_dataset):
    with pytest.raises(training.TrainingError, match="--init_from=.*--model_dir=NEW_DIR"):
        training.train(training.TrainConfig(model_dir=imported_run, data_dir=tiny_dataset, image_size=64))


def test_mismatched_architecture_is_an_error_before_anything_is_written(imported_run, tiny_dataset, tmp_path):
    common = dict(init_from=imported_run, data_dir=tiny_dataset, conv_filters=TINY_FILTERS, fc_units=TINY_FC,
                  batch_size=5)
    with pytest.raises(training.TrainingError, match="--image_size=64 does not fit .* --image_size=227"):
        training.train(training.TrainConfig(model_dir=str(tmp_path / "a"), image_size=64, **common))
    with pytest.raises(training.TrainingError, match="--fc_units=16 does not fit .* --fc_units=32"):
        training.train(training.TrainConfig(model_dir=str(tmp_path / "b"), image_size=227,
                                            **dict(common, fc_units=16)))
    with pytest.raises(training.TrainingError, match="fc8 of .* has 7 classes; the data has 5"):
        training.train(training.TrainConfig(model_dir=str(tmp_path / "c"), image_size=227, reinit_layers=(),
                                            **common))
    with pytest.raises(training.TrainingError, match="--freeze_layers names pool5"):
        training.train(training.TrainConfig(model_dir=str(tmp_path / "d"), image_size=227,
                                            freeze_layers=("pool5",), **common))
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_frozen_layers_are_not_trained_not_decayed_and_have_no_slots():
    model = build_alexnet(5, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=16)
    finetuning.freeze_layers(model, CONV_LAYERS)
    names = sorted(v.path for v in model.trainable_variables)
    assert names == sorted(f"{layer}/{part}" for layer in ("fc6", "fc7", "fc8") for part in ("kernel", "bias"))
    assert len(model.losses) == 3  # the decay of fc6, fc7 and fc8 only
    assert folds_every_loss(model)
    from alexnet_tf import MomentumSGD

    optimizer = MomentumSGD(learning_rate=0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    assert len(optimizer.momentums) == 6


@pytest.mark.slow
def test_finetune_cli_from_imported_weights_freezes_exports_and_resumes(weights_file, folder_227, tmp_path):
    imported = str(tmp_path / "bvlc")
    _cli("alexnet_tf.import_weights", f"--weights={weights_file}", f"--model_dir={imported}")
    run = str(tmp_path / "mine")
    command = ["--flagfile=flags/finetune.flags", f"--init_from={imported}", f"--data_dir={folder_227}",
               f"--model_dir={run}", *TINY_ARCHITECTURE, "--batch_size=6", "--epochs=1",
               "--steps_per_epoch=3", "--learning_rate=0.01"]
    result = _cli("alexnet_tf.train", *command)
    assert "Copied conv1, conv2, conv3, conv4, conv5, fc6, fc7 from" in result.stderr
    assert "Sharding callback" not in result.stderr  # TensorFlow's INFO lines stay hidden
    source, _, _ = runs.load_model(imported)
    tuned, spec, _ = runs.load_model(run)
    for name in CONV_LAYERS:  # frozen: bit-identical
        for part in ("kernel", "bias"):
            np.testing.assert_array_equal(getattr(tuned.get_layer(name), part).numpy(),
                                          getattr(source.get_layer(name), part).numpy(), err_msg=name)
    for name in ("fc6", "fc7"):  # trained from the copied weights
        assert not np.array_equal(tuned.get_layer(name).kernel.numpy(), source.get_layer(name).kernel.numpy())
    assert tuned.get_layer("fc8").kernel.shape == (TINY_FC, 3)
    # The run keeps the weights' function (Caffe's LRN) and input mean.
    assert spec["build_alexnet"]["lrn_bias"] == 1.0 and spec["rgb_mean"] == pytest.approx(caffe.CAFFE_RGB_MEAN)
    checkpoint = tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
    # Momentum slots for fc6, fc7, fc8 only (iterations and learning rate are scalars).
    slots = sorted(shape for name, shape in tf.train.list_variables(checkpoint)
                   if name.startswith("optimizer/_variables/") and shape)
    assert slots == sorted([[8 * 36, TINY_FC], [TINY_FC], [TINY_FC, TINY_FC], [TINY_FC], [TINY_FC, 3], [3]])
    export = os.path.join(run, "export", "1")
    outputs = tf.saved_model.load(export).signatures["serving_default"](
        image_bytes=tf.constant([open(sorted(_images(folder_227))[0], "rb").read()]))
    assert outputs["probabilities"].shape == (1, 3)
    # A rerun resumes from the run's own checkpoint, without its source (here: gone).
    shutil.rmtree(imported)
    resumed = _cli("alexnet_tf.train", *command[:-3], "--epochs=2", "--steps_per_epoch=3")
    assert "Resuming from" in resumed.stderr and "Copied" not in resumed.stderr
    assert json.loads(open(os.path.join(run, "train_results.json")).read())["steps_done"] == 6


def _images(shards_dir):
    root = os.path.dirname(shards_dir)
    return [os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(root, "train"))
            for name in names]


@pytest.mark.slow
def test_init_from_an_npy_or_a_run_directory(weights_file, folder_227, tmp_path):
    from_npy = str(tmp_path / "from_npy")
    common = dict(data_dir=folder_227, image_size=227, conv_filters=TINY_FILTERS, fc_units=TINY_FC,
                  batch_size=6, epochs=1, steps_per_epoch=1, evaluate_at_end=False, export_at_end=False)
    training.train(training.TrainConfig(model_dir=from_npy, init_from=weights_file, **common))
    # A run directory works as a source too; with fc8 kept, the classes must match (3 = 3).
    # Under a mixed-precision policy (the GPU recipe's) the copy and the freeze hold alike.
    from_run = str(tmp_path / "from_run")
    training.train(training.TrainConfig(model_dir=from_run, init_from=from_npy, reinit_layers=(),
                                        freeze_layers=("conv1",), mixed_precision="bfloat16", **common))
    first, _, _ = runs.load_model(from_npy)
    second, _, _ = runs.load_model(from_run)
    np.testing.assert_array_equal(second.get_layer("conv1").kernel.numpy(), first.get_layer("conv1").kernel.numpy())
    assert not np.array_equal(second.get_layer("fc8").kernel.numpy(), first.get_layer("fc8").kernel.numpy())


def test_export_npy_round_trips_and_warns_when_caffe_would_differ(imported_run, weights_file, trained_run, tmp_path):
    out = tmp_path / "again.npy"
    result = _cli("alexnet_tf.export", f"--model_dir={imported_run}", "--format=npy", f"--output={out}")
    assert f"to {out}" in result.stdout and "differs from Caffe" not in result.stderr
    original, again = caffe.read_npy_weights(weights_file), caffe.read_npy_weights(str(out))
    assert sorted(again) == sorted(original)
    for name in caffe.LAYERS:
        for part in (0, 1):
            np.testing.assert_array_equal(again[name][part], original[name][part], err_msg=name)
    model, spec, _ = runs.load_model(imported_run)
    with pytest.raises(FileExistsError, match="exists. Pass --overwrite"):
        caffe.export_npy(model, spec, str(out))
    # A run of the paper's network: its weights (conv1 in Caffe's BGR order), and what makes
    # Caffe's network compute another function with them.
    paper = tmp_path / "paper.npy"
    model, spec, _ = runs.load_model(trained_run)
    differences = caffe.export_npy(model, spec, str(paper))
    assert "lrn_bias=2.0 (Caffe: 1.0)" in differences and "image_size=64 (Caffe: 227)" in differences
    weights = caffe.read_npy_weights(str(paper))
    np.testing.assert_array_equal(weights["conv1"][0], model.get_layer("conv1").kernel.numpy()[:, :, ::-1, :])
    np.testing.assert_array_equal(weights["fc6"][0], model.get_layer("fc6").kernel.numpy())
