"""What a run starts from (`alexnet_tf.training.start`): fine-tuning from imported weights, a
run directory or a .npy; frozen and re-initialised layers; refused starts."""

import glob
import json
import re
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import build_alexnet, training
from alexnet_tf import run_dir
from alexnet_tf.training import start
from alexnet_tf.weights import caffe
from alexnet_tf.model.optimizer import folds_every_loss
from tests.weights.caffe_reference import TINY_FC, TINY_FILTERS
from tests.commands import run_command
from tests.serving.conformance import assert_serves_as_tf_serving

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
# The tiny weights' architecture, as flags (a fine-tune must be given the weights' own).
TINY_ARCHITECTURE = [f"--conv_filters={','.join(map(str, TINY_FILTERS))}", f"--fc_units={TINY_FC}"]



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
    start.freeze_layers(model, CONV_LAYERS)
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
    run_command("alexnet_tf.import_weights", f"--weights={weights_file}", f"--model_dir={imported}")
    run = str(tmp_path / "mine")
    command = ["--flagfile=flags/finetune.flags", f"--init_from={imported}", f"--data_dir={folder_227}",
               f"--model_dir={run}", *TINY_ARCHITECTURE, "--batch_size=6", "--epochs=1",
               "--steps_per_epoch=3", "--learning_rate=0.01"]
    result = run_command("alexnet_tf.train", *command)
    assert "Copied conv1, conv2, conv3, conv4, conv5, fc6, fc7 from" in result.stderr
    assert "Sharding callback" not in result.stderr  # TensorFlow's INFO lines stay hidden
    source, _, _ = run_dir.load_model(imported)
    tuned, spec, _ = run_dir.load_model(run)
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
    # Frozen layers (non-trainable variables) are restored by TF Serving's loader too.
    assert_serves_as_tf_serving(export)
    # A rerun resumes from the run's own checkpoint, without its source (here: gone).
    shutil.rmtree(imported)
    resumed = run_command("alexnet_tf.train", *command[:-3], "--epochs=2", "--steps_per_epoch=3")
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
                  batch_size=6, epochs=1, steps_per_epoch=1, evaluate_at_end=False)
    training.train(training.TrainConfig(model_dir=from_npy, init_from=weights_file, **common))
    # A run directory works as a source too; with fc8 kept, the classes must match (3 = 3).
    # Under a mixed-precision policy (the GPU recipe's) the copy and the freeze hold alike.
    from_run = str(tmp_path / "from_run")
    training.train(training.TrainConfig(model_dir=from_run, init_from=from_npy, reinit_layers=(),
                                        freeze_layers=("conv1",), mixed_precision="bfloat16", **common))
    first, _, _ = run_dir.load_model(from_npy)
    second, _, _ = run_dir.load_model(from_run)
    np.testing.assert_array_equal(second.get_layer("conv1").kernel.numpy(), first.get_layer("conv1").kernel.numpy())
    assert not np.array_equal(second.get_layer("fc8").kernel.numpy(), first.get_layer("fc8").kernel.numpy())


@pytest.mark.slow
def test_init_from_torchvisions_pth_keeps_its_network_and_mean(folder_227, tmp_path):
    from alexnet_tf.weights import torchvision

    pth = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                       "tiny_torchvision_alexnet.pth")
    model_dir = str(tmp_path / "from_pth")
    training.train(training.TrainConfig(
        model_dir=model_dir, init_from=pth, data_dir=folder_227, image_size=224, groups=1, lrn=False,
        conv_filters=(8, 16, 16, 16, 16), fc_units=32, freeze_layers=("conv1",), batch_size=6, epochs=1,
        steps_per_epoch=1, evaluate_at_end=False))
    model, spec, _ = run_dir.load_model(model_dir)
    assert spec["build_alexnet"]["adaptive_pool_size"] == 6
    assert spec["build_alexnet"]["dropout_inputs_of"] == ["fc6", "fc7"]
    assert spec["build_alexnet"]["conv1_padding"] == [2, 2]
    assert spec["rgb_mean"] == pytest.approx(torchvision.TORCHVISION_RGB_MEAN)
    assert spec["preprocessing"] == "paper"  # trained on the paper's crops from here on
    source, _ = torchvision.import_torchvision_pth(pth)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), source.get_layer("conv1").kernel.numpy())
    assert model.get_layer("fc8").kernel.shape == (32, 3)


# ---------------------------------------------------------------------------------------
# Resuming a run: what may change and what may not


def _tiny_config(model_dir, tiny_dataset, **overrides):
    values = dict(model_dir=str(model_dir), data_dir=tiny_dataset, image_size=64, conv_filters=(8, 8, 16, 16, 8),
                  fc_units=32, init="he", learning_rate=0.001, batch_size=4, epochs=1, steps_per_epoch=2,
                  flags_text="# the first run's flags\n")
    values.update(overrides)
    return training.TrainConfig(**values)


def _file_bytes(folder):
    return {os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(folder) for name in names if name != run_dir.LOCK_FILE}


def test_a_resume_that_would_change_the_network_or_data_stops_before_writing(tmp_path, tiny_dataset):
    run = tmp_path / "run"
    training.train(_tiny_config(run, tiny_dataset))
    before = _file_bytes(run)
    assert any(name.startswith("checkpoints/") for name in before)
    changed = _tiny_config(run, tiny_dataset, fc_units=16, batch_size=5, seed=7, epochs=3, steps_per_epoch=3,
                           freeze_layers=("conv1",), mixed_precision="bfloat16", flags_text="# other flags\n")
    with pytest.raises(training.TrainingError) as refused:
        training.train(changed)
    message = str(refused.value)
    assert "--fc_units: the run's 32, now 16" in message
    assert "--batch_size: the run's 4, now 5" in message
    assert "--seed: the run's 0, now 7" in message
    # What the checkpoint's structure and the data stream depend on, beyond the network.
    assert "--steps_per_epoch: the run's 2, now 3" in message
    assert "--freeze_layers: the run's , now conv1" in message
    assert "--mixed_precision: the run's none, now bfloat16" in message
    assert "--epochs" not in message.split("Nothing was written")[0]  # epochs may change
    assert f"--flagfile={run / 'flags.txt'}" in message
    assert _file_bytes(run) == before  # flags.txt, model_spec.json, every checkpoint


def test_a_resume_accepts_and_records_what_may_change(tmp_path, tiny_dataset, caplog):
    run = tmp_path / "run"
    training.train(_tiny_config(run, tiny_dataset))
    caplog.set_level("INFO", logger="alexnet_tf")
    result = training.train(_tiny_config(run, tiny_dataset, epochs=2, log_every_steps=1, backup_every_steps=1,
                                         learning_rate=0.0005, warmup_epochs=2.0, plateau_patience=2,
                                         eval_steps=2, strategy="default", flags_text="--epochs=2\n"))
    assert (result.epochs_done, result.steps_done) == (2, 4)
    assert (run / "flags.txt").read_text() == "--epochs=2\n"
    # Each change logged, and applied from the resumed step (2) on: the new rate (no reduction
    # was made yet) on the new 4-step ramp, at its steps 3 and 4.
    for change in ("--learning_rate changed from 0.001 to 0.0005", "--warmup_epochs changed from 0.0 to 2.0",
                   "--plateau_patience changed from 1 to 2"):
        assert change in caplog.text
    rates = [float(m.group(1)) for m in re.finditer(r"lr ([0-9.e-]+), [0-9.]+ images/s", caplog.text)]
    assert rates == pytest.approx([0.0005 * 3 / 4, 0.0005])


def test_a_new_rate_on_a_resume_keeps_the_reductions_and_a_stopped_run_trains_on(tmp_path, tiny_dataset, caplog):
    run = tmp_path / "run"
    # min_delta 1: only the first epoch improves (on inf), so epoch 2 reduces at step 4 and,
    # with one reduction allowed, epoch 3 stops the run.
    plateau = dict(plateau_min_delta=1.0, max_lr_reductions=1)
    stopped = training.train(_tiny_config(run, tiny_dataset, epochs=5, **plateau))
    assert stopped.stopped_by_plateau and (stopped.epochs_done, stopped.steps_done) == (3, 6)
    results = json.loads((run / "train_results.json").read_text())
    assert results["plateau"]["reduction_steps"] == [4]
    assert results["plateau"]["learning_rate"] == pytest.approx(0.0001)
    again = training.train(_tiny_config(run, tiny_dataset, epochs=5, **plateau))
    assert again.already_finished and again.steps_done == 6
    caplog.set_level("INFO", logger="alexnet_tf")
    more = training.train(_tiny_config(run, tiny_dataset, epochs=4, learning_rate=0.0005, log_every_steps=1,
                                       **dict(plateau, max_lr_reductions=2)))
    assert (more.epochs_done, more.steps_done) == (4, 8) and not more.already_finished
    assert "the rate goes from 0.0001 to 5e-05 (1 reduction(s) kept)" in caplog.text
    assert "allows more: it trains on from epoch 4" in caplog.text
    rates = [float(m.group(1)) for m in re.finditer(r"lr ([0-9.e-]+), [0-9.]+ images/s", caplog.text)]
    assert rates == pytest.approx([5e-05, 5e-05])


def test_a_finished_run_is_finished(tmp_path, tiny_dataset, capsys):
    run = tmp_path / "run"
    first = training.train(_tiny_config(run, tiny_dataset))
    assert first.chief and not first.already_finished  # the train command exports after such a run
    capsys.readouterr()
    again = training.train(_tiny_config(run, tiny_dataset))
    out = capsys.readouterr().out
    assert "This run is finished: --epochs=1 are done. To train on, rerun with --epochs above 1." in out
    assert f"top-1 error {first.final_metrics['top1_error']:.4f}" in out
    assert again.final_metrics == first.final_metrics and again.already_finished  # ... and not after this
    longer = training.train(_tiny_config(run, tiny_dataset, epochs=2))
    assert longer.steps_done == 4 and not longer.already_finished


def test_no_restorable_checkpoint_says_why_and_what_to_do(tmp_path, tiny_dataset):
    run = tmp_path / "run"
    training.train(_tiny_config(run, tiny_dataset))
    for path in glob.glob(str(run / "*" / "*.data-*")):
        with open(path, "r+b") as f:
            f.truncate(10)
    written = {name: (run / name).read_bytes() for name in ("flags.txt", "model_spec.json")}
    with pytest.raises(training.TrainingError) as refused:
        training.train(_tiny_config(run, tiny_dataset, epochs=2, flags_text="--epochs=2\n"))
    assert {name: (run / name).read_bytes() for name in written} == written  # refused: untouched
    message = str(refused.value)
    assert "None of the 2 checkpoints" in message and "checkpoints/ckpt-2:" in message and "backup/backup-2:" in message
    assert "flags.txt" in message and "new --model_dir" in message
