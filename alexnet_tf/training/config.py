"""What a training run is asked to do and what it reports: `TrainConfig`, `TrainResult`,
and the errors that stop a run (their messages say why and what to do)."""

import dataclasses


class TrainingError(Exception):
    """A run that cannot go on (bad input, NaN loss); the message says why and what to do."""


class NonFiniteLossError(TrainingError):
    pass


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str
    # Data: shards in data_dir, or explicit patterns, or a prepared TFDS dataset, or synthetic.
    data_dir: str | None = None
    train_files: str | None = None
    eval_files: str | None = None
    tfds_name: str | None = None
    tfds_data_dir: str | None = None
    synthetic: bool = False
    tf_data_service: str | None = None  # grpc://HOST:PORT of a tf.data service dispatcher
    num_classes: int = 0  # 0: from dataset_info.json
    image_size: int = 224
    # The paper's recipe.
    batch_size: int = 128
    epochs: int = 90
    steps_per_epoch: int = 0  # 0: training examples // batch_size
    eval_steps: int = 0  # 0: the whole validation split
    learning_rate: float = 0.01
    # Epochs over which the rate rises linearly from 0 to learning_rate, step by step
    # (large-batch training's warm-up, Goyal et al. 2017); 0: none, as in the paper.
    warmup_epochs: float = 0.0
    # Undecodable images that shards not written by pipelines.convert may hold (skipped and
    # logged by pipelines.audit) before the run is refused, as a fraction of the records.
    max_bad_fraction: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float = 0.5
    groups: int = 2
    lrn: bool = True
    init: str = "paper"
    conv_filters: tuple = (96, 256, 384, 384, 256)
    fc_units: int = 4096
    # The paper's ablations (flags/ablations/): pooling window, nonlinearity, removed layers,
    # and the training augmentation (random crops, flips, PCA lighting's stddev; 0: none).
    pool_size: int = 3
    activation: str = "relu"
    removed_layers: tuple = ()
    random_crop: bool = True
    random_flip: bool = True
    lighting_stddev: float = 0.1
    plateau_factor: float = 0.1
    plateau_patience: int = 1
    plateau_min_delta: float = 0.0
    plateau_cooldown: int = 0
    max_lr_reductions: int = 3
    # Fine-tuning: start from a run directory, a bvlc_alexnet .npy or a torchvision .pth (training/start.py).
    init_from: str | None = None
    reinit_layers: tuple = ("fc8",)  # not copied: fresh weights (fc8 sized to the data)
    freeze_layers: tuple = ()  # not trained, not decayed, no optimizer slots
    # Machinery.
    strategy: str = "auto"
    num_virtual_cpus: int = 0
    mixed_precision: str = "none"
    jit_compile: bool = False
    steps_per_execution: int = 1
    seed: int = 0
    shuffle_buffer: int = 10_000
    keep_checkpoints: int = 3
    backup_every_steps: int = 100
    log_every_steps: int = 50
    evaluate_at_end: bool = True
    # The command's resolved flags, written to model_dir/flags.txt by the chief (None: none).
    flags_text: str | None = None

    def __post_init__(self):
        # Flags give lists of strings; the config holds tuples of the fields' element types.
        object.__setattr__(self, "conv_filters", tuple(int(v) for v in self.conv_filters))
        object.__setattr__(self, "reinit_layers", tuple(self.reinit_layers))
        object.__setattr__(self, "freeze_layers", tuple(self.freeze_layers))
        object.__setattr__(self, "removed_layers", tuple(self.removed_layers))


@dataclasses.dataclass(frozen=True)
class TrainResult:
    epochs_done: int
    steps_done: int
    stopped_by_plateau: bool
    preempted: bool
    final_metrics: dict
    # Whether this process writes the run directory (the chief; the one that exports).
    chief: bool = True
    # The run was finished before this call: nothing was trained or evaluated.
    already_finished: bool = False
