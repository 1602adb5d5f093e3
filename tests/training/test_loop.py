import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import training
from alexnet_tf.training import summaries
from alexnet_tf.training.plateau import PlateauSchedule

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A tiny AlexNet through the model's own arguments: the real layers at a small width.
TINY = dict(image_size=64, conv_filters=(8, 8, 16, 16, 8), fc_units=32, init="he",
            learning_rate=0.001, batch_size=4, log_every_steps=1)
TINY_FLAGS = ["--image_size=64", "--conv_filters=8,8,16,16,8", "--fc_units=32", "--init=he",
              "--learning_rate=0.001", "--batch_size=4", "--log_every_steps=1"]


def _config(tmp_path, tiny_dataset, **overrides):
    values = dict(TINY, model_dir=str(tmp_path / "run"), data_dir=tiny_dataset, epochs=1,
                  steps_per_epoch=2)
    values.update(overrides)
    return training.TrainConfig(**values)


def _cli(*args, check=True, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "alexnet_tf.train", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}")
    return result


def _weights(checkpoint_prefix):
    reader = tf.train.load_checkpoint(checkpoint_prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/") and "OPTIMIZER" not in name}


def test_one_training_step_end_to_end(tmp_path, tiny_dataset):
    config = _config(tmp_path, tiny_dataset, steps_per_epoch=1)
    result = training.train(config)
    assert (result.epochs_done, result.steps_done) == (1, 1)
    assert result.final_metrics["num_examples"] == 15  # every validation image, batch 4
    run = tmp_path / "run"
    assert tf.train.latest_checkpoint(str(run / "checkpoints"))
    assert tf.train.latest_checkpoint(str(run / "backup"))
    assert glob.glob(str(run / "logs" / "train" / "events.*"))
    results = json.loads((run / "train_results.json").read_text())
    assert results["steps_done"] == 1 and results["plateau"]["learning_rate"] == pytest.approx(0.001)


def test_training_learns_on_generated_classes(tmp_path, tiny_dataset):
    # 35 images of 5 very different classes: 14 short epochs must beat chance (0.8 error)
    # clearly. On 15 validation images the figure swings with the seed (seeds 0-3 gave
    # 0.33, 0.13, 0.27, 0.80 here with per-epoch seeded shuffles): seed 1.
    result = training.train(_config(tmp_path, tiny_dataset, epochs=14, steps_per_epoch=8, seed=1,
                                    conv_filters=(16, 16, 32, 32, 16), fc_units=64,
                                    max_lr_reductions=5, plateau_patience=3, dropout=0.0))
    assert result.final_metrics["top1_error"] <= 0.5


def test_mirrored_strategy_over_two_virtual_cpus(tmp_path, tiny_dataset, caplog):
    caplog.set_level("INFO")
    result = training.train(_config(tmp_path, tiny_dataset, strategy="mirrored", steps_per_epoch=2))
    assert result.steps_done == 2
    assert "MirroredStrategy, 2 replicas" in caplog.text
    assert result.final_metrics["num_examples"] == 15  # 15 does not divide into 2 x 2
    with pytest.raises(training.TrainingError, match="divisible by the 2 replicas. Received: 5"):
        training.train(_config(tmp_path / "odd", tiny_dataset, strategy="mirrored", batch_size=5))


def test_nan_loss_stops_and_keeps_the_last_good_state(tmp_path, tiny_dataset):
    training.train(_config(tmp_path, tiny_dataset, steps_per_epoch=2))
    good = tf.train.latest_checkpoint(str(tmp_path / "run" / "backup"))
    good_weights = _weights(good)
    # A fresh run in the same folder would resume; a new folder with a huge rate diverges.
    with pytest.raises(training.NonFiniteLossError, match="Nothing was saved"):
        training.train(_config(tmp_path / "nan", tiny_dataset, learning_rate=1e12, steps_per_epoch=6,
                               backup_every_steps=1, weight_decay=0.0))
    for path in glob.glob(str(tmp_path / "nan" / "run" / "*" / "*.index")):
        weights = _weights(path[:-len(".index")])
        assert all(np.all(np.isfinite(w)) for w in weights.values()), path
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "backup")) == good
    assert all(np.array_equal(good_weights[k], v) for k, v in _weights(good).items())


def test_plateau_reduces_three_times_then_stops():
    plateau = PlateauSchedule(0.01, factor=0.1, patience=1, max_reductions=3)
    assert [plateau.update(e) for e in [0.5, 0.6, 0.6, 0.6, 0.6]] == [
        "improved", "reduced", "reduced", "reduced", "stop"]
    assert plateau.learning_rate.numpy() == pytest.approx(1e-5)
    assert plateau.reductions.numpy() == 3 and bool(plateau.stopped.numpy())


def test_plateau_patience_min_delta_and_cooldown():
    plateau = PlateauSchedule(1.0, factor=0.5, patience=2, min_delta=0.01, cooldown=1, max_reductions=None)
    assert plateau.update(0.50) == "improved"
    assert plateau.update(0.495) == "waiting"  # better, but by less than min_delta
    assert plateau.update(0.50) == "reduced"  # patience 2 reached
    assert plateau.learning_rate.numpy() == 0.5
    # Keras' cooldown: its counter reaches 0 in the next epoch, which already counts.
    assert plateau.update(0.60) == "waiting"
    assert plateau.update(0.60) == "reduced"
    assert plateau.update(0.40) == "improved" and plateau.best.numpy() == 0.40


def test_plateau_state_survives_a_checkpoint_round_trip(tmp_path):
    plateau = PlateauSchedule(0.01, patience=1, max_reductions=3)
    for error in [0.5, 0.6, 0.4, 0.45]:
        plateau.update(error)
    path = tf.train.Checkpoint(plateau=plateau).write(str(tmp_path / "ckpt"))
    restored = PlateauSchedule(0.01, patience=1, max_reductions=3)
    tf.train.Checkpoint(plateau=restored).read(path).assert_consumed()
    assert restored.state() == plateau.state()
    assert restored.state()["reductions"] == 2 and restored.state()["best"] == 0.4


# Runs `alexnet_tf.train`'s entry point, app.run(main), once per argv in one interpreter (one
# TensorFlow import instead of one per case); prints [[exit code, stderr], ...].
_RUN_EACH_ARGV = """
import contextlib, io, json, sys
from absl import app, flags
from alexnet_tf import train
results = []
for argv in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            app.run(train.main, argv=["alexnet_tf.train", *argv])
            code = 0
        except SystemExit as exit:
            code = exit.code
    results.append([code, stderr.getvalue()])
print(json.dumps(results))
"""


def test_cli_flag_errors_exit_1_naming_the_flag(tmp_path, tiny_dataset):
    base = [f"--data_dir={tiny_dataset}", f"--model_dir={tmp_path / 'run'}"]
    flagfile = tmp_path / "typo.flags"
    flagfile.write_text(f"--data_dir={tiny_dataset}\n--lerning_rate=0.1\n")
    cases = [([*base, "--strategy=fastest"], ["strategy", "fastest"]),
             ([*base, "--batch_size=0"], ["batch_size"]),
             ([*base, "--conv_filters=96,256"], ["conv_filters"]),
             # Values the flag's type allows but the library does not: refused as flags.
             ([*base, "--plateau_factor=0"], ["plateau_factor"]),
             ([*base, "--plateau_factor=1"], ["plateau_factor"]),
             ([*base, "--seed=-1"], ["seed"]),
             ([*base, "--groups=5"], ["groups=5", "do not make a network"]),
             ([f"--data_dir={tiny_dataset}"], ["--model_dir"]),
             ([f"--model_dir={tmp_path}"], ["No data"]),
             ([f"--flagfile={flagfile}", f"--model_dir={tmp_path / 'run'}"], ["lerning_rate"])]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", _RUN_EACH_ARGV, json.dumps([argv for argv, _ in cases])],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True)
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    for (argv, words), (code, stderr) in zip(cases, outcomes):
        assert code == 1, (argv, stderr)
        assert all(word in stderr for word in words), (argv, words, stderr)
    assert not (tmp_path / "run").exists()  # nothing started


def test_sigkill_then_rerun_with_its_flagfile_resumes_exactly(tmp_path, tiny_dataset):
    common = [f"--data_dir={tiny_dataset}", "--epochs=2", "--steps_per_epoch=6",
              "--backup_every_steps=1", "--seed=3", *TINY_FLAGS]
    # The uninterrupted reference through the library (the same config the flags make).
    training.train(_config(tmp_path, tiny_dataset, model_dir=str(tmp_path / "reference"), epochs=2,
                           steps_per_epoch=6, backup_every_steps=1, seed=3))
    run = tmp_path / "killed"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen([sys.executable, "-m", "alexnet_tf.train", *common, f"--model_dir={run}"],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        # The run must still be going when it is killed, or this test would prove nothing.
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no backup at step >= 4 within 180 s"
        state = tf.train.get_checkpoint_state(str(run / "backup"))
        if state and state.model_checkpoint_path.endswith(("-4", "-5", "-6", "-7")):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed, not ended
    # The run's flags.txt is itself a valid flagfile: rerunning with it alone resumes the run.
    text = (run / "flags.txt").read_text()
    assert "--steps_per_epoch=6" in text and "--conv_filters=8,8,16,16,8" in text and f"--model_dir={run}" in text
    result = _cli(f"--flagfile={run / 'flags.txt'}")
    resumed_at = re.search(r"Resuming from \S+: epoch \d+ / step (\d+)", result.stderr)
    assert resumed_at and 4 <= int(resumed_at.group(1)) < 12, result.stderr[-3000:]  # mid-run, not the end
    reference = _weights(tf.train.latest_checkpoint(str(tmp_path / "reference" / "checkpoints")))
    resumed = _weights(tf.train.latest_checkpoint(str(run / "checkpoints")))
    assert set(reference) == set(resumed)
    for name in reference:
        np.testing.assert_allclose(resumed[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
    results = json.loads((run / "train_results.json").read_text())
    assert results["steps_done"] == 12 and results["epochs_done"] == 2


def test_sigterm_saves_then_exits_and_a_rerun_resumes(tmp_path, tiny_dataset):
    # 60 steps: the SIGTERM lands within a few steps of the first backup (step 2), long before
    # the end; the rerun trains the rest.
    common = [f"--data_dir={tiny_dataset}", f"--model_dir={tmp_path / 'run'}", "--epochs=1",
              "--steps_per_epoch=60", "--backup_every_steps=2", *TINY_FLAGS]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen([sys.executable, "-m", "alexnet_tf.train", *common], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # SIGTERM once training is under way: the first periodic backup (step 2) is on disk.
    deadline = time.monotonic() + 180
    while not tf.train.latest_checkpoint(str(tmp_path / "run" / "backup")):
        assert time.monotonic() < deadline and process.poll() is None, "no backup within 180 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert "SIGTERM: saved the training state" in stderr
    step = int(tf.train.latest_checkpoint(str(tmp_path / "run" / "backup")).rsplit("-", 1)[1])
    assert 2 <= step < 60
    result = _cli(*common, "--backup_every_steps=1000")  # (the rest of the epoch, without 30 backups)
    assert f"epoch 0 / step {step}" in result.stderr


def _summary_tags(logdir):
    tags = set()
    for path in glob.glob(os.path.join(logdir, "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_tensorboard_summaries(tmp_path, tiny_dataset):
    training.train(_config(tmp_path, tiny_dataset, steps_per_epoch=2))
    train_tags = _summary_tags(str(tmp_path / "run" / "logs" / "train"))
    assert {"loss", "top1_error", "top5_error", "learning_rate", "images_per_second",
            "augmented_training_images", "conv1_filters"} <= train_tags
    assert {"loss", "top1_error", "top5_error"} <= _summary_tags(str(tmp_path / "run" / "logs" / "validation"))


def test_conv1_filter_grid_shows_every_kernel():
    from alexnet_tf import build_alexnet

    grid = summaries.conv1_filter_grid(build_alexnet(10, image_size=64, fc_units=16))
    # The report's Figure 3: 96 kernels of 11x11x3 scaled to 44 px, each tower's 48 in 3 rows of
    # 16 (2-px gaps), the towers 12 px apart.
    assert grid.shape == (1, 2 * (3 * 44 + 2 * 2) + 12, 16 * 44 + 15 * 2, 3)
    assert grid.min() >= 0.0 and grid.max() <= 1.0


@pytest.mark.parametrize("overrides", [
    dict(mixed_precision="bfloat16"),
    dict(mixed_precision="float16"),
    dict(jit_compile=True),
    dict(steps_per_execution=3, steps_per_epoch=6),
])
def test_gpu_oriented_options_train_on_cpu(tmp_path, tiny_dataset, overrides):
    values = dict(steps_per_epoch=2)
    values.update(overrides)
    result = training.train(_config(tmp_path, tiny_dataset, **values))
    assert result.steps_done == values["steps_per_epoch"]
    assert np.isfinite(result.final_metrics["loss"])
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run


def test_synthetic_data_trains(tmp_path):
    result = training.train(training.TrainConfig(
        model_dir=str(tmp_path / "run"), synthetic=True, num_classes=7, **{**TINY, "batch_size": 2},
        epochs=1, steps_per_epoch=2))
    assert result.steps_done == 2


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, tiny_dataset, caplog):
    training.train(_config(tmp_path, tiny_dataset, epochs=2, steps_per_epoch=2))
    newest = tf.train.latest_checkpoint(str(tmp_path / "run" / "backup"))
    assert newest.endswith("-4")
    for path in glob.glob(newest + ".data-*"):
        with open(path, "r+b") as f:
            f.truncate(100)  # a torn write
    caplog.set_level("INFO")
    result = training.train(_config(tmp_path, tiny_dataset, epochs=2, steps_per_epoch=2))
    assert "falling back to an older checkpoint" in caplog.text
    assert "Resuming from" in caplog.text and "step 4" in caplog.text  # checkpoints/ckpt-4 is intact
    assert result.steps_done == 4


def test_one_trainer_per_run_directory(tmp_path, tiny_dataset):
    """A live holder of the run directory stops a second trainer at once, naming its host and
    pid; a holder killed with SIGKILL leaves nothing that blocks the next trainer."""
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom alexnet_tf.run_dir import RunDirLock\n"
         "lock = RunDirLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(600)\n", str(run)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(training.TrainingError, match=rf"in use by a trainer \(host .+, pid {holder.pid},"):
            training.train(_config(tmp_path, tiny_dataset))
        assert not (run / "checkpoints").exists() and not (run / "model_spec.json").exists()
    finally:
        holder.kill()
        holder.wait()
    result = training.train(_config(tmp_path, tiny_dataset))  # the lock died with it
    assert result.steps_done == 2
    assert f"pid {os.getpid()}," in (run / ".train.lock").read_text()


def test_warmup_ramps_the_rate_per_step_and_resumes_on_the_ramp(tmp_path, caplog):
    # 1.5 epochs of 4 steps: 6 warm-up steps at 1/6, 2/6, ... of the rate, then the rate.
    from alexnet_tf.training.steps import warmup_factor

    assert [warmup_factor(s, 6) for s in (0, 5, 6, 100)] == [1 / 6, 1.0, 1.0, 1.0] and warmup_factor(0, 0) == 1.0
    common = dict(model_dir=str(tmp_path / "run"), synthetic=True, num_classes=5,
                  **{**TINY, "batch_size": 2, "learning_rate": 0.006}, warmup_epochs=1.5, steps_per_epoch=4,
                  )
    caplog.set_level("INFO", logger="alexnet_tf")
    training.train(training.TrainConfig(epochs=1, **common))
    training.train(training.TrainConfig(epochs=2, **common))  # resumes at step 4, on the ramp
    rates = [float(m.group(1)) for m in re.finditer(r"lr ([0-9.e-]+), [0-9.]+ images/s", caplog.text)]
    assert rates == pytest.approx([0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.006, 0.006])


def test_a_foreign_shard_stops_training_at_once_naming_it(tmp_path):
    # Every record fails to parse (a label stored as bytes): the run stops before training,
    # naming the shard, the record and the reason, instead of waiting forever for a batch.
    from pipelines import schema, tfrecord

    shard = tmp_path / "data" / "train-00000-of-00001"
    shard.parent.mkdir()
    with tfrecord.TFRecordWriter(str(shard)) as writer:
        for _ in range(4):
            writer.write(tfrecord.serialize_example({schema.IMAGE_ENCODED: b"x", schema.CLASS_LABEL: b"cat"}))
    result = _cli(*TINY_FLAGS, f"--train_files={shard}", "--num_classes=2", "--steps_per_epoch=1",
                  f"--model_dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"{shard}: record 0 cannot be parsed with the dataset schema" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_checkpoints_hold_weights_and_slots_and_no_input_state(tmp_path, tiny_dataset):
    # Before, every backup and epoch checkpoint also held the input iterator: its shuffle
    # buffer of encoded JPEGs and the decoded, prefetched batches. Now the stream is rebuilt
    # at the step, so a checkpoint is the model, the momentum slots and a few counters.
    training.train(_config(tmp_path, tiny_dataset, steps_per_epoch=2, shuffle_buffer=35))
    for folder in ("checkpoints", "backup"):
        prefix = tf.train.latest_checkpoint(str(tmp_path / "run" / folder))
        names = [name for name, _ in tf.train.list_variables(prefix)]
        assert not [name for name in names if "iterator" in name.lower()], names
        reader = tf.train.load_checkpoint(prefix)
        variables = sum(np.asarray(reader.get_tensor(name)).nbytes for name in names
                        if not name.startswith("_CHECKPOINTABLE"))
        weights = sum(value.nbytes for name, value in _weights(prefix).items())
        data_bytes = sum(os.path.getsize(path) for path in glob.glob(f"{prefix}.data-*"))
        assert 2 * weights <= variables and data_bytes <= 1.05 * variables + 4096  # weights + slots, nothing else


def _final_weights(model_dir):
    return _weights(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")))


def test_the_ramp_is_exact_per_step_whatever_the_steps_per_call(tmp_path, caplog):
    # 8 steps, a 6-step ramp, 4 steps per call: the ramp ends inside the second call. Each
    # step's rate is set inside the call, so the run equals the one-step-per-call run.
    common = dict(synthetic=True, num_classes=5, **{**TINY, "batch_size": 2, "learning_rate": 0.006},
                  warmup_epochs=0.75, steps_per_epoch=8, epochs=1)
    caplog.set_level("INFO", logger="alexnet_tf")
    training.train(training.TrainConfig(model_dir=str(tmp_path / "four"), steps_per_execution=4, **common))
    rates = [float(m.group(1)) for m in re.finditer(r"lr ([0-9.e-]+), [0-9.]+ images/s", caplog.text)]
    assert rates == pytest.approx([0.004, 0.006])  # the last step of each call: 4/6 and the full rate
    training.train(training.TrainConfig(model_dir=str(tmp_path / "one"), steps_per_execution=1, **common))
    four, one = _final_weights(tmp_path / "four"), _final_weights(tmp_path / "one")
    for name in one:
        np.testing.assert_allclose(four[name], one[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_a_run_stopped_at_any_backup_resumes_to_the_uninterrupted_weights(tmp_path):
    # The uninterrupted run backs up after every call (3 steps each, over 2 epochs of 5 steps
    # and a 4-step ramp). A kill right after the backup of step k leaves that backup as the
    # newest state: copy it alone into a fresh run directory and resume from it.
    import shutil

    common = dict(synthetic=True, num_classes=5, **{**TINY, "batch_size": 2, "learning_rate": 0.004},
                  warmup_epochs=0.8, steps_per_epoch=5, epochs=2, steps_per_execution=3, backup_every_steps=1,
                  keep_checkpoints=5)
    full = tmp_path / "full"
    saved = {}

    def keep_backups(epoch, metrics):  # the backup manager keeps two: copy each as it comes
        for path in glob.glob(str(full / "backup" / "backup-*")):
            saved.setdefault(os.path.basename(path), open(path, "rb").read())

    training.train(training.TrainConfig(model_dir=str(full), **common), on_epoch_end=keep_backups)
    expected = _final_weights(full)
    # Step 3 (mid-epoch, on the ramp); step 5 (an epoch end, as the epoch checkpoint). Each
    # resume also changes flags a resume may change and that leave every step's rate and
    # batch as they were (steps per call, logging, backups), drawn at random (seeded).
    rng = np.random.default_rng(0)
    for step in (3, 5):
        changes = {"steps_per_execution": int(rng.integers(1, 5)), "log_every_steps": int(rng.integers(1, 4)),
                   "backup_every_steps": int(rng.integers(1, 4))}
        resumed = tmp_path / f"from_{step}"
        (resumed / "backup").mkdir(parents=True)
        for name, data in saved.items():
            if name.startswith(f"backup-{step}."):
                (resumed / "backup" / name).write_bytes(data)
        (resumed / "backup" / "checkpoint").write_text(
            f'model_checkpoint_path: "backup-{step}"\nall_model_checkpoint_paths: "backup-{step}"\n')
        result = training.train(training.TrainConfig(model_dir=str(resumed), **{**common, **changes}))
        assert result.steps_done == 10, changes
        final = _final_weights(resumed)
        for name in expected:
            np.testing.assert_allclose(final[name], expected[name], rtol=1e-5, atol=1e-7,
                                       err_msg=f"{step} {changes} {name}")


def test_a_shard_damaged_after_conversion_is_named_with_the_fix(tmp_path, tiny_dataset):
    # Bytes changed in place (same size, same times): the converter's manifest still trusts the
    # shard, and TensorFlow's own error would say only "corrupted record at N".
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    shard = sorted(data.glob("train-*"))[1]
    stat = shard.stat()
    with open(shard, "r+b") as f:
        f.seek(stat.st_size // 2)
        f.write(bytes(64))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(training.TrainingError) as refused:
        training.train(_config(tmp_path, str(data), steps_per_epoch=9))  # an epoch: every shard read
    message = str(refused.value)
    assert f"{shard}:" in message and "changed after they were written" in message
    assert "rerun the pipelines.convert command" in message and "pipelines.verify" in message
    assert str(sorted(data.glob("train-*"))[0]) not in message
