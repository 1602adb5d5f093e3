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
        callback.on_epoch_end(epoch, logs)
        callback_trace.append((round(float(np.asarray(model.optimizer.learning_rate)), 8), model.stop_training))
        decision = schedule.update(value)
        schedule_trace.append((round(float(schedule.learning_rate.numpy()), 8), decision == "stop"))
        assert logs["learning_rate"] == pytest.approx(callback_trace[-1][0])
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
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.01, 0.001, 0.001], rtol=1e-6)
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
