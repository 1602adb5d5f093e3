"""The run directory, below training and serving, which both read and write it: its layout
(`layout`), its `model_spec.json` and the model rebuilt from it (`spec`), and the one-trainer
lock (`lock`). Training, `alexnet_tf.import_weights`, evaluation, export, prediction and
neighbours all go through these names.
"""

from alexnet_tf.run_dir.layout import (BACKUP_DIR, CHECKPOINTS_DIR, EXPORT_DIR, FLAGS_FILE, LOCK_FILE,
                                       MODEL_SPEC_FILE, NPY_WEIGHTS_FILE, RESULTS_FILE, TFLITE_DYNAMIC_FILE,
                                       TFLITE_FILE, check_local_path, has_checkpoint, latest_checkpoint)
from alexnet_tf.run_dir.lock import RunDirInUseError, RunDirLock
from alexnet_tf.run_dir.spec import (NETWORK_KEY, load_model, network_of, preprocessing_of, read_model_spec,
                                     restore_weights,
                                     statistics_of, write_model_spec)

__all__ = ["BACKUP_DIR", "CHECKPOINTS_DIR", "EXPORT_DIR", "FLAGS_FILE", "LOCK_FILE", "MODEL_SPEC_FILE",
           "NPY_WEIGHTS_FILE", "RESULTS_FILE", "RunDirInUseError", "RunDirLock", "TFLITE_DYNAMIC_FILE",
           "NETWORK_KEY", "TFLITE_FILE", "check_local_path", "has_checkpoint", "latest_checkpoint",
           "load_model", "network_of", "preprocessing_of", "read_model_spec", "restore_weights", "statistics_of",
           "write_model_spec"]
