"""Every value a command's flag accepts is one its library accepts (issue 24).

The flags of every command but train (tests/training/test_loop.py and test_start.py probe
train's) are read from the commands themselves, in one subprocess: each integer or float
flag is probed at its bounds (and below zero where it has none), each enum at every value,
through the library call the command makes. The library must either do the work or refuse
with the error the command prints as one `ERROR:` line, naming the flag. A new bounded flag
without a probe fails `test_every_bounded_flag_has_a_probe`.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from alexnet_tf.training import strategies
from tests.commands import REPO

COMMANDS = ("alexnet_tf.evaluate", "alexnet_tf.export", "alexnet_tf.neighbors", "alexnet_tf.report", "alexnet_tf.predict",
            "alexnet_tf.import_weights", "pipelines.convert", "pipelines.verify", "pipelines.data_service")

_FLAG_SPECS = r"""
import importlib, json, sys
from absl import flags
specs = {}
for name in sys.argv[1:]:
    before = set(flags.FLAGS)
    importlib.import_module(name)
    specs[name] = {flag.name: dict(type=flag.flag_type(), lower=getattr(flag.parser, "lower_bound", None),
                                   upper=getattr(flag.parser, "upper_bound", None),
                                   enum=getattr(flag.parser, "enum_values", None))
                   for flag in flags.FLAGS.get_flags_for_module(name)}
    for added in set(flags.FLAGS) - before:  # the next command defines its own --model_dir
        delattr(flags.FLAGS, added)
print(json.dumps(specs))
"""


@pytest.fixture(scope="module")
def flag_specs():
    result = subprocess.run([sys.executable, "-c", _FLAG_SPECS, *COMMANDS], cwd=REPO, capture_output=True,
                            text=True, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return json.loads(result.stdout.splitlines()[-1])


def _values(spec):
    """The accepted values worth probing: the bounds (or below zero, without one), every enum value."""
    if spec["enum"]:
        return list(spec["enum"])
    if spec["type"] not in ("int", "float"):
        return []
    values = [spec["lower"] if spec["lower"] is not None else -(2 ** 31)]
    values.append(spec["upper"] if spec["upper"] is not None else 2 ** 31)
    return values


# (command, flag) -> the library call the command makes with that flag's value, on tiny data.
# Each probe returns normally or raises one of the errors the command prints as `ERROR:`.
def _evaluate(trained_run, tiny_dataset, tmp_path, **changes):
    from alexnet_tf.serving import evaluation
    from pipelines import schema

    config = evaluation.EvalConfig(model_dir=trained_run, eval_files=schema.split_file_pattern(tiny_dataset, "validation"),
                                   **{"batch_size": 5, **changes})
    return evaluation.evaluate(config)


def _export(trained_run, tiny_dataset, tmp_path, **changes):
    from alexnet_tf.serving import saved_model

    where = ({"export_dir": str(tmp_path / "export")} if changes.get("format", "saved_model") == "saved_model"
             else {"output": str(tmp_path / "model.out")})
    return saved_model.export_run(saved_model.ExportConfig(model_dir=trained_run, **where, **changes))


def _neighbors(trained_run, tiny_dataset, tmp_path, **changes):
    import numpy as np
    import tensorflow as tf

    from alexnet_tf.serving import retrieval
    from pipelines import schema

    query = tmp_path / "query.jpg"
    query.write_bytes(tf.io.encode_jpeg(np.full((80, 90, 3), 120, np.uint8)).numpy())
    run = tmp_path / "run"  # the feature cache is written inside the run: a copy of its own
    if not run.exists():
        shutil.copytree(trained_run, run)
    config = retrieval.NeighborsConfig(model_dir=str(run), split="train", queries=(str(query),),
                                       file_pattern=schema.split_file_pattern(tiny_dataset, "train"), **changes)
    return retrieval.find_neighbors(config)


def _predict(trained_run, tiny_dataset, tmp_path, **changes):
    import numpy as np
    import tensorflow as tf

    from alexnet_tf.serving import prediction

    image = tmp_path / "image.jpg"
    image.write_bytes(tf.io.encode_jpeg(np.full((80, 90, 3), 120, np.uint8)).numpy())
    results = prediction.predict(prediction.PredictConfig(images=(str(image),) * 3, progress=False,
                                                          saved_model=os.path.join(trained_run, "export", "1"),
                                                          **changes))
    assert [len(result.top) for result in results] == [5, 5, 5]


def _convert(trained_run, tiny_dataset, tmp_path, **changes):
    from pipelines import conversion, synthetic

    images = tmp_path / "images"
    if not images.exists():
        synthetic.write_image_folder(images, num_classes=2, images_per_class=2, min_size=40, max_size=60, seed=0)
    config = conversion.ConvertConfig(input_dir=str(images), output_dir=str(tmp_path / "shards"),
                                      **{"workers": 1, "progress": False, **changes})
    return conversion.convert_split(config)


def _data_service(trained_run, tiny_dataset, tmp_path, *, port=None, worker_port=None):
    from pipelines import data_service

    if port is not None:  # a dispatcher alone at that port
        servers = data_service.start_servers(dispatcher_port=port, worker=False)
    else:  # a worker at that port, registered with a dispatcher on any free port
        dispatcher, = data_service.start_servers(dispatcher_port=0, worker=False)
        servers = [dispatcher, *data_service.start_servers(dispatcher_address=dispatcher.target.split("://")[1],
                                                           worker_port=worker_port, worker_address="localhost")]
    for server in reversed(servers):
        server.stop()


def _errors():
    from alexnet_tf.serving import saved_model
    from pipelines import conversion

    return {"alexnet_tf.evaluate": (FileNotFoundError, ValueError, strategies.StrategyError),
            "alexnet_tf.export": (FileNotFoundError, FileExistsError, saved_model.ExportError),
            "alexnet_tf.neighbors": (OSError, ValueError),
            "alexnet_tf.report": (OSError, ValueError),
            "alexnet_tf.predict": (ValueError,),
            "pipelines.convert": (conversion.ConversionError,),
            "pipelines.data_service": ()}


PROBES = {
    ("alexnet_tf.evaluate", "crops"): lambda *a, value: _evaluate(*a, crops=int(value)),
    ("alexnet_tf.evaluate", "batch_size"): lambda *a, value: _evaluate(*a, batch_size=value),
    ("alexnet_tf.evaluate", "strategy"): lambda *a, value: _evaluate(*a, strategy=value),
    ("alexnet_tf.evaluate", "num_virtual_cpus"): lambda *a, value: _evaluate(*a, num_virtual_cpus=value),
    ("alexnet_tf.export", "version"): lambda *a, value: _export(*a, version=value),
    ("alexnet_tf.export", "max_pixels"): lambda *a, value: _export(*a, max_pixels=value),
    ("alexnet_tf.export", "format"): lambda *a, value: _export(*a, format=value),
    ("alexnet_tf.export", "quantize"): lambda *a, value: _export(*a, format="tflite", quantize=value),
    ("alexnet_tf.neighbors", "k"): lambda *a, value: _neighbors(*a, k=value),
    ("alexnet_tf.neighbors", "batch_size"): lambda *a, value: _neighbors(*a, batch_size=value),
    # The report's --batch_size goes where neighbors' does: retrieval.split_features.
    ("alexnet_tf.report", "batch_size"): lambda *a, value: _neighbors(*a, batch_size=value),
    ("alexnet_tf.predict", "batch_size"): lambda *a, value: _predict(*a, batch_size=value),
    ("pipelines.convert", "num_shards"): lambda *a, value: _convert(*a, num_shards=value),
    ("pipelines.convert", "workers"): lambda *a, value: _convert(*a, workers=value),
    ("pipelines.convert", "resize_shorter"): lambda *a, value: _convert(*a, resize_shorter=value),
    ("pipelines.convert", "quality"): lambda *a, value: _convert(*a, quality=value),
    ("pipelines.convert", "seed"): lambda *a, value: _convert(*a, seed=value),
    ("pipelines.convert", "max_bad_fraction"): lambda *a, value: _convert(*a, max_bad_fraction=value),
    ("pipelines.data_service", "port"): lambda *a, value: _data_service(*a, port=value),
    ("pipelines.data_service", "worker_port"): lambda *a, value: _data_service(*a, worker_port=value),
}

# Values a probe in this (test) process cannot try, and where the real command is tested with them.
ELSEWHERE = {
    # MultiWorkerMirroredStrategy configures collectives before the runtime starts: a fresh
    # process. The train command's multi-worker tests run it; evaluation takes the same call.
    ("alexnet_tf.evaluate", "strategy", "multi_worker"): "tests/training/test_multi_worker.py",
    # Splitting the CPU happens before the runtime starts, too.
    ("alexnet_tf.evaluate", "num_virtual_cpus", 2 ** 31): "tests/serving/test_evaluation.py",
    # 2**31 worker processes, or shards, or pixels: the probes below take the largest sane value.
    ("pipelines.convert", "workers", 2 ** 31): None,
    ("pipelines.convert", "num_shards", 2 ** 31): None,
    # Four 16384 x 20000 JPEGs take minutes: the library's own bound is tested below.
    ("pipelines.convert", "resize_shorter", 16384): None,
    ("pipelines.data_service", "port", 65535): None,  # may be taken on this machine; 0 is probed
    ("pipelines.data_service", "worker_port", 65535): None,
}


def test_every_bounded_flag_has_a_probe(flag_specs):
    probed = {(command, name) for command, specs in flag_specs.items() for name, spec in specs.items()
              if _values(spec) and name != "worst_classes"}  # (a count of printed lines: no library)
    assert probed == set(PROBES)


def _cases():
    # The values are those of the flag definitions (checked against them by the test above),
    # written out so that each case is a test of its own.
    cases = {
        ("alexnet_tf.evaluate", "crops"): ["1", "10"],
        ("alexnet_tf.evaluate", "batch_size"): [1, 65536],
        ("alexnet_tf.evaluate", "strategy"): list(strategies.STRATEGIES),
        ("alexnet_tf.evaluate", "num_virtual_cpus"): [0, 1, 2 ** 31],
        ("alexnet_tf.export", "version"): [1, 2 ** 31],
        ("alexnet_tf.export", "max_pixels"): [1, 2 ** 31],
        ("alexnet_tf.export", "format"): ["saved_model", "npy", "tflite"],
        ("alexnet_tf.export", "quantize"): ["none", "dynamic"],
        ("alexnet_tf.neighbors", "k"): [1, 2 ** 31],
        ("alexnet_tf.neighbors", "batch_size"): [1, 65536],
        ("alexnet_tf.report", "batch_size"): [1, 65536],
        ("alexnet_tf.predict", "batch_size"): [1, 65536],
        ("pipelines.convert", "num_shards"): [0, 2 ** 31, 50],
        ("pipelines.convert", "workers"): [0, 2 ** 31, 64],
        ("pipelines.convert", "resize_shorter"): [0, 1, 16384],
        ("pipelines.convert", "quality"): [1, 100],
        ("pipelines.convert", "seed"): [-(2 ** 31), 2 ** 31],
        ("pipelines.convert", "max_bad_fraction"): [0.0, 1.0],
        ("pipelines.data_service", "port"): [0, 65535],
        ("pipelines.data_service", "worker_port"): [0, 65535],
    }
    return [(command, flag, value) for (command, flag), values in cases.items() for value in values]


def test_the_cases_cover_each_flags_bounds(flag_specs):
    cases = {}
    for command, flag, value in _cases():
        cases.setdefault((command, flag), []).append(value)
    for (command, flag), values in cases.items():
        spec = flag_specs[command][flag]
        assert set(_values(spec)) <= set(values), (command, flag)


@pytest.mark.parametrize("command,flag,value", _cases())
def test_an_accepted_value_is_done_or_refused_by_name(command, flag, value, trained_run, tiny_dataset, tmp_path):
    if (command, flag, value) in ELSEWHERE:
        pytest.skip(ELSEWHERE[command, flag, value] or "covered by the sane value of the same flag")
    try:
        PROBES[command, flag](trained_run, tiny_dataset, tmp_path, value=value)
    except _errors()[command] as error:
        # This flag, or the one its value conflicts with (--batch_size for a strategy's replicas).
        assert re.search(r"--[a-z_]+", str(error)), (command, flag, value, str(error))


def test_the_limits_the_flags_cannot_know_are_the_librarys(flag_specs, tmp_path):
    from pipelines import conversion
    from pipelines import dataset as datasets

    for command in ("alexnet_tf.evaluate", "alexnet_tf.neighbors", "alexnet_tf.report"):
        assert flag_specs[command]["batch_size"]["upper"] == datasets.MAX_BATCH_SIZE
    with pytest.raises(ValueError, match=f"--batch_size <= {datasets.MAX_BATCH_SIZE}"):
        datasets.EvalOptions(batch_size=datasets.MAX_BATCH_SIZE + 1)
    assert flag_specs["pipelines.convert"]["resize_shorter"]["upper"] == conversion.MAX_RESIZE_SHORTER
    with pytest.raises(conversion.ConversionError, match="--resize_shorter"):
        conversion.convert_split(conversion.ConvertConfig(input_dir=str(tmp_path), output_dir=str(tmp_path / "out"),
                                                          resize_shorter=conversion.MAX_RESIZE_SHORTER + 1))


def test_an_export_flag_of_another_format_is_refused_not_ignored(trained_run, tmp_path):
    from alexnet_tf.serving import saved_model

    with pytest.raises(saved_model.ExportError, match="--quantize not for --format=saved_model"):
        saved_model.export_run(saved_model.ExportConfig(model_dir=trained_run, quantize="dynamic"))
    with pytest.raises(saved_model.ExportError, match="--export_dir and --version not for --format=npy"):
        saved_model.export_run(saved_model.ExportConfig(model_dir=trained_run, format="npy", version=2,
                                                        export_dir=str(tmp_path)))
    assert not os.listdir(tmp_path)
