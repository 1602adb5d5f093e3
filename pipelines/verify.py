r"""Reads converted shards back and names any that is corrupt or miscounted.

    python -m pipelines.verify --data_dir=data/imagenet [--splits=train,validation] [--decode]

Exit status 1 on any problem (see `pipelines.verification`).
"""

import sys

from absl import app
from absl import flags

from pipelines import verification

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder of shards and dataset_info.json.", required=True)
_SPLITS = flags.DEFINE_list("splits", None, "Splits to verify (default: all in dataset_info.json).")
_DECODE = flags.DEFINE_bool("decode", False, "Also decode every image (slower).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    report = verification.verify_dataset(_DATA_DIR.value, splits=_SPLITS.value, decode=_DECODE.value)
    return report.exit_code


def run():
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
