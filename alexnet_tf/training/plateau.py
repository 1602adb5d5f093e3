"""The paper's learning-rate rule as a checkpointable object.

"Divide the learning rate by 10 when the validation error rate stops improving with the
current learning rate ... reduced three times prior to termination." Like Keras'
ReduceLROnPlateau (factor, patience, min_delta, cooldown), monitoring validation top-1
error, plus a limit on reductions after which training stops. Its state lives in
tf.Variables, so it is saved and restored with the training checkpoint, under any strategy.
"""

import tensorflow as tf


class PlateauSchedule(tf.Module):
    """Reduces the learning rate when the validation error stops improving.

    Args:
      learning_rate: the starting rate.
      factor: multiplier on a reduction (the paper: 0.1).
      patience: epochs without improvement before a reduction.
      min_delta: an improvement is an error lower than the best by more than this.
      cooldown: epochs after a reduction during which no new reduction happens.
      max_reductions: after this many reductions, the next plateau stops training
        (the paper: 3). 0: never reduce, stop at the first plateau; None: never stop.
      mode: "min" (an error or a loss: lower is better) or "max" (an accuracy).
      min_lr: a reduction never goes below it (Keras' ReduceLROnPlateau's lower bound).
    """

    MODES = ("min", "max")

    def __init__(self, learning_rate, *, factor=0.1, patience=1, min_delta=0.0, cooldown=0,
                 max_reductions=3, mode="min", min_lr=0.0, name="plateau"):
        super().__init__(name=name)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"Expected 0 < factor < 1. Received: factor={factor}")
        if patience < 1:
            raise ValueError(f"Expected patience >= 1. Received: patience={patience}")
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
        in_cooldown = self.cooldown_left.numpy() > 0
        if in_cooldown:
            self.cooldown_left.assign_sub(1)
        best = self.best.numpy()
        improved = value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta
        if improved:
            self.best.assign(value)
            self.wait.assign(0)
            return "improved"
        if in_cooldown:  # a cooldown epoch does not count towards the patience
            return "waiting"
        self.wait.assign_add(1)
        if self.wait.numpy() < self.patience:
            return "waiting"
        self.wait.assign(0)
        if self.max_reductions is not None and self.reductions.numpy() >= self.max_reductions:
            self.stopped.assign(True)
            return "stop"
        self.learning_rate.assign(max(self.learning_rate.numpy() * self.factor, self.min_lr))
        self.reductions.assign_add(1)
        self.cooldown_left.assign(self.cooldown)
        return "reduced"

    def state(self):
        return {"learning_rate": float(self.learning_rate.numpy()), "best": float(self.best.numpy()),
                "wait": int(self.wait.numpy()), "cooldown_left": int(self.cooldown_left.numpy()),
                "reductions": int(self.reductions.numpy()), "stopped": bool(self.stopped.numpy())}
