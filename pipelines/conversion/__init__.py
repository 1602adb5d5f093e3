"""ImageNet-style JPEG folders to sharded TFRecords: the library behind `pipelines.convert`.

One split per call (`convert_split`). The plan (files, labels, shard assignment) is made in
the parent from file names only (`planning`); worker processes each write whole shards
(`worker`), repairing ImageNet's awkward files on the way (`images`). A shard is written
under a temporary name, its manifest (count, skipped files, pixel statistics, size,
fingerprint of the arguments) is saved in `output_dir/.convert/`, and only then is the shard
renamed into place: a shard under its final name with a matching manifest is complete, and
a rerun skips it. Everything a shard holds depends only on its files and the arguments, so
the output is byte-identical whatever the number of workers and however often the run was
interrupted. `converter` runs it all with a progress bar and writes dataset_info.json.

Importing this package does not import TensorFlow.
"""

from pipelines.conversion.config import MAX_RESIZE_SHORTER, ConversionError, ConvertConfig, SplitSummary
from pipelines.conversion.converter import convert_split, rgb_statistics
from pipelines.conversion.images import BadImageError, encode_rgb_jpeg
from pipelines.conversion.planning import MANIFEST_DIR, default_num_shards, read_class_names

__all__ = [
    "BadImageError",
    "ConversionError",
    "ConvertConfig",
    "MANIFEST_DIR",
    "SplitSummary",
    "convert_split",
    "default_num_shards",
    "encode_rgb_jpeg",
    "read_class_names",
    "rgb_statistics",
]
