"""Everything between image files and batches of tensors: schema, conversion, augmentation, datasets.

Never imports `alexnet_tf`. Importing this package does not import TensorFlow: the
conversion tool's worker processes stay light until they need it.
"""

_LAZY = {
    "EvalOptions": "pipelines.dataset",
    "Source": "pipelines.dataset",
    "TrainOptions": "pipelines.dataset",
    "build_dataset": "pipelines.dataset",
    "build_eval_dataset": "pipelines.dataset",
    "build_train_dataset": "pipelines.dataset",
    "DatasetStatistics": "pipelines.dataset",
    "load_statistics": "pipelines.dataset",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


__all__ = sorted(_LAZY)
