"""`alexnet_tf.callbacks.ReduceLROnPlateau`: Keras' arguments, the paper's stop, and the same
decisions as the training loop's `PlateauSchedule`."""

import keras
import numpy as np
import pytest

from alexnet_tf.callbacks import ReduceLROnPlateau
from alexnet_tf.training.plateau import PlateauSchedule


def _tiny_model(learning_rate=0.1):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


@pytest.mark.parametrize("monitor, values", [
    ("val_loss", [1.0, 0.9, 0.9, 0.9, 0.8, 0.85, 0.8, 0.8, 0.8, 0.79, 0.8, 0.8, 0.8, 0.8]),
    ("val_accuracy", [0.1, 0.2, 0.2, 0.2, 0.3, 0.25, 0.3, 0.3, 0.3, 0.31, 0.3, 0.3, 0.3, 0.3]),
])
def test_the_callback_decides_as_the_training_loops_schedule(monitor, values):
    arguments = dict(factor=0.5, patience=2, min_delta=0.0, cooldown=1, max_reductions=2)
    model = _tiny_model()
    callback = ReduceLROnPlateau(monitor=monitor, min_lr=0.0, **arguments)
    callback.set_model(model)
    callback.on_train_begin()
    schedule = PlateauSchedule(0.1, mode="max" if "acc" in monitor else "min", **arguments)
    callback_trace, schedule_trace = [], []
    for epoch, value in enumerate(values):
        logs = {monitor: value}
        epoch_rate = float(np.asarray(model.optimizer.learning_rate))
        callback.on_epoch_end(epoch, logs)
        callback_trace.append((round(float(np.asarray(model.optimizer.learning_rate)), 8), model.stop_training))
        decision = schedule.update(value)
        schedule_trace.append((round(float(schedule.learning_rate.numpy()), 8), decision == "stop"))
        assert logs["learning_rate"] == pytest.approx(epoch_rate)  # the epoch's own, as Keras logs it
        if model.stop_training:
            break
    assert callback_trace == schedule_trace
    assert [lr for lr, _ in callback_trace][-1] == 0.025 and callback_trace[-1][1]  # two halvings, then stop


def test_model_fit_stops_at_the_plateau_after_the_last_reduction():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.normal(size=(32, 3)).astype(np.float32)
    model = _tiny_model(0.1)
    # min_delta so large that no epoch after the first counts as an improvement: a plateau each epoch.
    callback = ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=1, min_delta=1e9, max_reductions=2)
    history = model.fit(x, y, validation_data=(x, y), epochs=20, batch_size=8, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 4  # improved, reduced, reduced, stop
    # Each epoch's own rate (Keras logs it before the epoch's reduction).
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.1, 0.01, 0.001], rtol=1e-6)
    assert model.stop_training


def test_min_lr_bounds_the_reductions_and_none_never_stops():
    model = _tiny_model(0.1)
    callback = ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=1, min_lr=0.005, max_reductions=None)
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(6):
        callback.on_epoch_end(epoch, {"val_loss": 1.0})
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(0.005)
    assert not model.stop_training


def test_keras_argument_checks():
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        ReduceLROnPlateau(mode="sideways")
    with pytest.raises(ValueError, match="max_reductions"):
        ReduceLROnPlateau(max_reductions=-1)
    with pytest.raises(ValueError, match="Unrecognized arguments"):
        ReduceLROnPlateau(epsilon=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_without_the_stop_every_epochs_rate_and_log_are_keras_own(seed):
    # Keras' own callback and this one on the same monitored values, for arguments Keras
    # accepts (patience 0, cooldowns, a min_lr that clamps): the same rate after every epoch
    # and the same logged rate (the epoch's own, before its reduction).
    rng = np.random.default_rng(seed)
    arguments = dict(monitor="val_loss", factor=float(rng.choice([0.1, 0.5])), patience=int(rng.integers(0, 3)),
                     cooldown=int(rng.integers(0, 3)), min_delta=float(rng.choice([0.0, 0.05])),
                     min_lr=float(rng.choice([0.0, 0.02])))
    values = list(1.0 - np.cumsum(rng.choice([0.0, 0.0, 0.1], size=30)) * 0.1)
    ours, theirs = _tiny_model(0.1), _tiny_model(0.1)
    callbacks = [(ReduceLROnPlateau(max_reductions=None, **arguments), ours),
                 (keras.callbacks.ReduceLROnPlateau(**arguments), theirs)]
    for callback, model in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, value in enumerate(values):
        logs = [{"val_loss": value}, {"val_loss": value}]
        for (callback, _), log in zip(callbacks, logs):
            callback.on_epoch_end(epoch, log)
        rates = [float(np.asarray(model.optimizer.learning_rate)) for model in (ours, theirs)]
        assert rates[0] == pytest.approx(rates[1], rel=1e-6), (arguments, epoch)
        assert logs[0]["learning_rate"] == pytest.approx(logs[1]["learning_rate"], rel=1e-6), (arguments, epoch)


def test_a_plateau_at_min_lr_is_not_a_reduction():
    model = _tiny_model(0.1)
    callback = ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=1, min_lr=0.01, max_reductions=2)
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(5):
        callback.on_epoch_end(epoch, {"val_loss": 1.0})
    # 0.1 -> 0.01 is the one reduction; at min_lr nothing is reduced or counted, so no stop.
    assert int(callback.schedule.reductions.numpy()) == 1 and not model.stop_training
