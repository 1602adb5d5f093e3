"""The paper's learning-rate rule as a checkpointable object.

"Divide the learning rate by 10 when the validation error rate stops improving with the
current learning rate ... reduced three times prior to termination." It decides as Keras'
`keras.callbacks.ReduceLROnPlateau` does (factor, patience, min_delta, cooldown, min_lr: the
same rate after every epoch, for any sequence; tests/callbacks checks it against Keras), plus
a limit on reductions after which training stops. Its state lives in
tf.Variables, so it is saved and restored with the training checkpoint, under any strategy.
"""

import numpy as np
import tensorflow as tf


class PlateauSchedule(tf.Module):
    """Reduces the learning rate when the validation error stops improving.

    Args:
      learning_rate: the starting rate.
      factor: multiplier on a reduction (the paper: 0.1).
      patience: epochs without improvement before a reduction (0 acts as 1, as in Keras).
      min_delta: an improvement is an error lower than the best by more than this.
      cooldown: as Keras counts it: the cooldown ends in the epoch its counter reaches 0, so
        `cooldown=N` holds N - 1 full epochs without counting towards the patience.
      max_reductions: after this many reductions, the next plateau stops training
        (the paper: 3). 0: never reduce, stop at the first plateau; None: never stop.
      mode: "min" (an error or a loss: lower is better) or "max" (an accuracy).
      min_lr: a reduction never goes below it; a plateau at min_lr reduces nothing and is
        not counted (Keras' ReduceLROnPlateau's lower bound).
    """

    MODES = ("min", "max")

    def __init__(self, learning_rate, *, factor=0.1, patience=1, min_delta=0.0, cooldown=0,
                 max_reductions=3, mode="min", min_lr=0.0, name="plateau"):
        super().__init__(name=name)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"Expected 0 < factor < 1. Received: factor={factor}")
        if patience < 0:
            raise ValueError(f"Expected patience >= 0. Received: patience={patience}")
        if mode not in self.MODES:
            raise ValueError(f"Expected mode to be one of {self.MODES}. Received: mode={mode!r}")
        self.factor, self.patience, self.min_delta = factor, patience, abs(min_delta)
        self.cooldown, self.max_reductions = cooldown, max_reductions
        self.mode, self.min_lr = mode, float(min_lr)
        with tf.init_scope():
            self.learning_rate = tf.Variable(float(learning_rate), trainable=False, dtype=tf.float64,
                                             name="learning_rate")
            worst = float("inf") if mode == "min" else float("-inf")
            self.best = tf.Variable(worst, trainable=False, dtype=tf.float64, name="best")
            self.wait = tf.Variable(0, trainable=False, dtype=tf.int64, name="wait")
            self.cooldown_left = tf.Variable(0, trainable=False, dtype=tf.int64, name="cooldown_left")
            self.reductions = tf.Variable(0, trainable=False, dtype=tf.int64, name="reductions")
            self.stopped = tf.Variable(False, trainable=False, name="stopped")

    def update(self, value):
        """Records one epoch's monitored value (the loop: validation top-1 error). Returns
        "improved", "waiting", "reduced" or "stop"."""
        value = float(value)
        # Keras' order: the cooldown counts down first, and the epoch in which it reaches 0
        # already counts towards the patience.
        if self.cooldown_left.numpy() > 0:
            self.cooldown_left.assign_sub(1)
            self.wait.assign(0)
        best = self.best.numpy()
        improved = value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta
        if improved:
            self.best.assign(value)
            self.wait.assign(0)
            return "improved"
        if self.cooldown_left.numpy() > 0:  # a cooldown epoch does not count towards the patience
            return "waiting"
        self.wait.assign_add(1)
        if self.wait.numpy() < self.patience:
            return "waiting"
        if self.max_reductions is not None and self.reductions.numpy() >= self.max_reductions:
            self.wait.assign(0)
            self.stopped.assign(True)
            return "stop"
        # Compared in float32, the optimizer's precision, as Keras compares them.
        if not np.float32(self.learning_rate.numpy()) > np.float32(self.min_lr):
            return "waiting"  # at min_lr: nothing to reduce, and (as in Keras) the wait goes on
        self.wait.assign(0)
        self.learning_rate.assign(max(self.learning_rate.numpy() * self.factor, self.min_lr))
        self.reductions.assign_add(1)
        self.cooldown_left.assign(self.cooldown)
        return "reduced"

    def state(self):
        return {"learning_rate": float(self.learning_rate.numpy()), "best": float(self.best.numpy()),
                "wait": int(self.wait.numpy()), "cooldown_left": int(self.cooldown_left.numpy()),
                "reductions": int(self.reductions.numpy()), "stopped": bool(self.stopped.numpy())}
