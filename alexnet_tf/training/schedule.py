"""The learning rate of every step as recorded state, and what a resume may change of it.

The rate of step s is `plateau.learning_rate x warmup_factor(s, warmup_steps)`, set inside the
compiled step (`training.steps`): the plateau rule's rate is checkpointed, the ramp is a
function of the step. Beside it the checkpoint records the schedule's settings (the flags
below, as the run last trained with them) and the step of every reduction, so a resume knows
what it changes:

- a new `--learning_rate` rescales the checkpointed rate by new / old: the reductions already
  made are kept (a run reduced twice by 0.1 and resumed with `--learning_rate=0.005` trains at
  0.005 x 0.01 from the resumed step on);
- a new `--warmup_epochs` or plateau flag applies from the resumed step on (a ramp longer
  than the steps done continues at that step's point of the new ramp);
- a run the plateau rule stopped trains on when `--max_lr_reductions` is raised above the
  reductions it made (and `--epochs` above those it did).
Each change is logged.
"""

import json
import logging

import tensorflow as tf

logger = logging.getLogger(__name__)

# The flags that make the schedule: a resume may change each (logged).
SCHEDULE_FLAGS = ("learning_rate", "warmup_epochs", "plateau_factor", "plateau_patience", "plateau_min_delta",
                  "plateau_cooldown", "max_lr_reductions")


class ScheduleRecord(tf.Module):
    """Checkpointed beside the plateau rule: the schedule's settings as JSON and the steps
    at which the rate was reduced."""

    def __init__(self, name="schedule"):
        super().__init__(name=name)
        with tf.init_scope():
            self.settings = tf.Variable("", dtype=tf.string, trainable=False, name="settings")
            self.reduction_steps = tf.Variable(tf.zeros([0], tf.int64), shape=tf.TensorShape([None]),
                                               trainable=False, name="reduction_steps")

    def recorded_settings(self):
        text = self.settings.numpy().decode()
        return json.loads(text) if text else {}

    def record_settings(self, config):
        self.settings.assign(json.dumps(settings_of(config), sort_keys=True))

    def record_reduction(self, step):
        self.reduction_steps.assign(tf.concat([self.reduction_steps, tf.constant([step], tf.int64)], 0))

    def reductions(self):
        return [int(step) for step in self.reduction_steps.numpy()]


def settings_of(config):
    return {name: getattr(config, name) for name in SCHEDULE_FLAGS}


def resume(config, plateau, record, *, epoch):
    """Applies what `config` changes of a restored run's schedule (see the module docstring)
    and records `config`'s settings. Returns the changes as log lines."""
    recorded, current = record.recorded_settings(), settings_of(config)
    changes = []
    if not recorded:
        changes.append("this run's checkpoint predates the recorded schedule: its rate continues as checkpointed")
    for name in SCHEDULE_FLAGS:
        if name in recorded and recorded[name] != current[name]:
            changes.append(f"--{name} changed from {recorded[name]} to {current[name]}")
    old_rate = recorded.get("learning_rate")
    if old_rate and old_rate != config.learning_rate:
        before = float(plateau.learning_rate.numpy())
        plateau.learning_rate.assign(before * config.learning_rate / old_rate)
        changes.append(f"the rate goes from {before:g} to {float(plateau.learning_rate.numpy()):g} "
                       f"({int(plateau.reductions.numpy())} reduction(s) kept)")
    reductions = int(plateau.reductions.numpy())
    if bool(plateau.stopped.numpy()) and config.max_lr_reductions > reductions:
        plateau.stopped.assign(False)
        plateau.wait.assign(0)
        changes.append(f"the plateau rule had stopped the run after {reductions} reduction(s); "
                       f"--max_lr_reductions={config.max_lr_reductions} allows more: it trains on from epoch "
                       f"{epoch + 1}")
    record.record_settings(config)
    for change in changes:
        logger.info("Resuming: %s", change)
    return changes


def finished_message(config, *, epoch, plateau):
    """Why a restored run has nothing left to do, and exactly what would make it train on."""
    reductions = int(plateau.reductions.numpy())
    if bool(plateau.stopped.numpy()):
        more_epochs = f" and --epochs above {epoch}" if epoch >= config.epochs else ""
        return (f"the plateau rule stopped it after {reductions} learning-rate reduction(s) "
                f"(--max_lr_reductions={config.max_lr_reductions}). To train on, rerun with --max_lr_reductions "
                f"above {reductions}{more_epochs}")
    return f"--epochs={config.epochs} are done. To train on, rerun with --epochs above {epoch}"
