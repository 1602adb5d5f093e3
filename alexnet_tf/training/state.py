"""The training state on disk: one `tf.train.Checkpoint` of model, optimizer, counters,
plateau rule and schedule record (`training.schedule`), saved to `backup/` (restart state)
and `checkpoints/` (one per epoch), and restored from the newest readable one. No input state: the input stream is a function of
the run's seed and the step (`pipelines.TrainOptions(start_example=...)`), so a checkpoint
is the weights and optimizer slots alone."""

import logging
import os
import tempfile

import tensorflow as tf

from alexnet_tf import run_dir
from alexnet_tf.training import strategies
from alexnet_tf.training.config import NonFiniteLossError, TrainingError
from alexnet_tf.training.schedule import ScheduleRecord

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = run_dir.CHECKPOINTS_DIR
BACKUP_DIR = run_dir.BACKUP_DIR


def write_dir_of(model_dir, strategy):
    """model_dir for the chief; a scratch folder for other workers (deleted at the end)."""
    if strategies.is_chief(strategy):
        return model_dir, None
    scratch = tempfile.mkdtemp(prefix="alexnet_worker_")
    return scratch, scratch


class TrainingState:
    """The checkpointed state and its two managers (epoch checkpoints and restart backups)."""

    def __init__(self, *, model, optimizer, plateau, write_dir, model_dir, keep):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.plateau = plateau
        self.schedule = ScheduleRecord()
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, plateau=plateau, epoch=self.epoch, step=self.step,
            schedule=self.schedule)
        # Checkpoints written before the schedule was recorded: everything but the record.
        self._without_schedule = tf.train.Checkpoint(
            model=model, optimizer=optimizer, plateau=plateau, epoch=self.epoch, step=self.step)
        self.model_dir = model_dir
        self.checkpoints = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(write_dir, CHECKPOINTS_DIR), max_to_keep=keep,
            checkpoint_name="ckpt")
        self.backups = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(write_dir, BACKUP_DIR), max_to_keep=2, checkpoint_name="backup")

    def restore_newest(self):
        """Restores the newest readable state of model_dir. Returns its path or None."""
        candidates = []
        for folder, prefix in ((BACKUP_DIR, "backup"), (CHECKPOINTS_DIR, "ckpt")):
            state = tf.train.get_checkpoint_state(os.path.join(self.model_dir, folder))
            for path in (state.all_model_checkpoint_paths if state else []):
                candidates.append(path)
        # Newest first; a backup and an epoch checkpoint of the same step are the same state.
        ordered = sorted(candidates, key=checkpoint_step, reverse=True)
        failures = []
        for path in ordered:
            try:
                self._checkpoint_of(path).read(path).assert_existing_objects_matched().expect_partial()
                return path
            except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                failures.append(f"  {os.path.relpath(path, self.model_dir)}: {reason}")
                logger.warning("Cannot restore %s (%s); falling back to an older checkpoint.", path, reason)
        if ordered:
            raise TrainingError(
                f"None of the {len(ordered)} checkpoints in {self.model_dir} can be restored into this "
                "run's model and state:\n" + "\n".join(failures) + "\nNothing was changed. If the "
                "flags differ from the run's, resume with its own flagfile (flags.txt in the run "
                "directory); if the files are damaged (a full disk, a copy cut short), restore them "
                "from a backup copy; or train into a new --model_dir.")
        return None

    def _checkpoint_of(self, path):
        names = (name for name, _ in tf.train.list_variables(path))
        return self.checkpoint if any(name.startswith("schedule/") for name in names) else self._without_schedule

    def save_backup(self):
        self._check_finite()
        self.backups.save(checkpoint_number=int(self.step.numpy()))

    def save_checkpoint(self):
        self._check_finite()
        self.checkpoints.save(checkpoint_number=int(self.step.numpy()))
        self.backups.save(checkpoint_number=int(self.step.numpy()))

    def _check_finite(self):
        # Never let NaN/Inf weights replace the last good state.
        model = self.checkpoint.model
        finite = all(bool(tf.reduce_all(tf.math.is_finite(v.value))) for v in model.trainable_variables)
        if not finite:
            raise NonFiniteLossError(
                f"The weights hold NaN/Inf at step {int(self.step.numpy())}. Nothing was saved: the "
                f"last good state is in {self.model_dir}. Lower --learning_rate or check the data.")


def checkpoint_step(path):
    """The global step in a checkpoint's name (both managers number checkpoints by step)."""
    suffix = path.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1
