"""The paper's learning-rate rule for `model.fit`, with Keras' ReduceLROnPlateau arguments.

"Divide the learning rate by 10 when the validation error rate stopped improving with the
current learning rate ... reduced three times prior to termination." Keras' callback of that
name reduces but never stops; this one also stops training (`model.stop_training`) at the
plateau after `max_reductions` reductions. Its decisions are `PlateauSchedule.update`'s, the
schedule the training loop runs: one implementation.
"""

import logging

import keras
import numpy as np

from alexnet_tf.training.plateau import PlateauSchedule

logger = logging.getLogger(__name__)


class ReduceLROnPlateau(keras.callbacks.Callback):
    """Reduces the learning rate when a metric has stopped improving; stops after the last.

    Args:
      monitor: the logged quantity to watch (e.g. "val_loss", "val_accuracy").
      factor: multiplier on a reduction (the paper: 0.1).
      patience: epochs without improvement before a reduction (0: every such epoch, as Keras).
      verbose: 1 logs each reduction and the stop.
      mode: "min", "max", or "auto" (max for a monitor whose name has "acc", else min).
      min_delta: an improvement must beat the best by more than this.
      cooldown: epochs after a reduction during which no new reduction happens.
      min_lr: the learning rate never goes below it.
      max_reductions: after this many reductions the next plateau stops training (the
        paper: 3); None: never stop (Keras' own callback).
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, max_reductions=3, **kwargs):
        super().__init__()
        if kwargs:
            raise ValueError(f"Unrecognized arguments for ReduceLROnPlateau: {sorted(kwargs)}")
        if factor >= 1.0 or factor <= 0.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor outside (0, 1). Received: "
                             f"factor={factor}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"Expected mode to be one of 'auto', 'min', 'max'. Received: mode={mode!r}")
        if max_reductions is not None and max_reductions < 0:
            raise ValueError(f"Expected max_reductions >= 0 or None. Received: max_reductions={max_reductions}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, factor, patience, verbose
        self.mode, self.min_delta, self.cooldown, self.min_lr = mode, min_delta, cooldown, min_lr
        self.max_reductions = max_reductions
        self.schedule = None

    def _resolved_mode(self):
        if self.mode != "auto":
            return self.mode
        return "max" if "acc" in self.monitor else "min"

    def on_train_begin(self, logs=None):
        self.schedule = PlateauSchedule(
            float(np.asarray(self.model.optimizer.learning_rate)), factor=self.factor, patience=self.patience,
            min_delta=self.min_delta, cooldown=self.cooldown, max_reductions=self.max_reductions,
            mode=self._resolved_mode(), min_lr=self.min_lr)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        # As Keras: the epoch's own rate, before this epoch's decision changes it.
        logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        if self.monitor not in logs:
            logger.warning("ReduceLROnPlateau watches %r, which is not among the logged metrics %s: "
                           "nothing is changed.", self.monitor, sorted(logs))
            return
        decision = self.schedule.update(logs[self.monitor])
        learning_rate = float(self.schedule.learning_rate.numpy())
        if decision == "reduced":
            self.model.optimizer.learning_rate = learning_rate
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {learning_rate:g}.")
        elif decision == "stop":
            self.model.stop_training = True
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau stops training: {self.monitor} stopped improving "
                      f"after {int(self.schedule.reductions.numpy())} reductions.")

    def get_config(self):
        return {"monitor": self.monitor, "factor": self.factor, "patience": self.patience, "verbose": self.verbose,
                "mode": self.mode, "min_delta": self.min_delta, "cooldown": self.cooldown, "min_lr": self.min_lr,
                "max_reductions": self.max_reductions}
