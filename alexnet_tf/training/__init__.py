"""The training library behind `python -m alexnet_tf.train`, one module per job:

- `config`: `TrainConfig` (what a run is asked), `TrainResult`, the errors;
- `data`: the config's data source resolved to datasets, classes, steps, statistics;
- `start`: what the run starts from (new, resumed, or weights made elsewhere), decided once;
- `steps`: the compiled train and evaluation steps;
- `state`: the checkpointed training state on disk and its restore;
- `plateau`: the paper's divide-by-10 learning-rate schedule;
- `strategies`: the tf.distribute strategy by name, and who writes the run directory;
- `summaries`: TensorBoard;
- `loop`: `train`, which ties them together.

The names below load on first use, so that `alexnet_tf.training.strategies` (which
evaluation uses) does not import the loop.
"""

import importlib

_LAZY = {
    "NonFiniteLossError": "alexnet_tf.training.config",
    "TrainConfig": "alexnet_tf.training.config",
    "TrainResult": "alexnet_tf.training.config",
    "TrainingError": "alexnet_tf.training.config",
    "train": "alexnet_tf.training.loop",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alexnet_tf.training' has no attribute {name!r}")


__all__ = sorted(_LAZY)
