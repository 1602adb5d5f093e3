"""What a conversion is asked (`ConvertConfig`), what it reports (`SplitSummary`) and the
error that stops it."""

import dataclasses

from pipelines import schema


# The largest --resize_shorter: the longer side grows in proportion, and a JPEG's sides are at
# most 65,535 pixels (an image 4x longer than high still fits).
MAX_RESIZE_SHORTER = 16384


class ConversionError(Exception):
    """Invalid input or arguments; the message says what and how to fix it."""


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    input_dir: str
    output_dir: str
    split: str = schema.TRAIN_SPLIT
    labels_file: str | None = None
    synsets_file: str | None = None
    class_names_file: str | None = None
    imagenet: bool = False  # ILSVRC-2012's classes, names and validation labels (pipelines.imagenet)
    num_shards: int = 0  # 0: the default for the split and input size
    workers: int = 0  # 0: every core
    resize_shorter: int = 256
    quality: int = 95
    seed: int = 0
    max_bad_fraction: float = 0.001
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class SplitSummary:
    split: str
    num_examples: int
    num_shards: int
    num_files: int
    skipped: list
    shards_written: int
    shards_reused: int
    seconds: float

    @property
    def bad_fraction(self):
        return len(self.skipped) / max(1, self.num_files)
