"""What the command lines share about their output."""

import logging


class _WarningsAndAbove(logging.Filter):
    def filter(self, record):
        return record.levelno >= logging.WARNING


def quiet_tensorflow_info():
    """Hides TensorFlow's INFO lines, keeping its warnings and this project's progress lines.

    TensorFlow logs per-checkpoint-shard and SavedModel details at INFO through absl's
    logger and its own; the project's modules log through their own Python loggers. A
    filter, not a level: `tf.saved_model.save` resets absl's level (AutoTrackable sets and
    restores the verbosity while it scans attributes).
    """
    for name in ("absl", "tensorflow"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _WarningsAndAbove) for f in logger.filters):
            logger.addFilter(_WarningsAndAbove())
