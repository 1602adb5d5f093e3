"""Flags to configs: the train command's flags and `TrainConfig` are one list of names."""

import dataclasses

import pytest
from absl import flags

from alexnet_tf import train  # noqa: F401  (defines the train flags)
from alexnet_tf.cli import configs
from alexnet_tf.training import TrainConfig

# Flags of the command that are not training options: where generated data goes and how much.
COMMAND_ONLY_FLAGS = {"generate_data", "generate_classes", "generate_train_images", "generate_eval_images", "export"}
# Fields the command computes: the data folder after generation and the flagfile text. (--export
# is the command's own step after training: training imports nothing from serving.)
COMPUTED_FIELDS = {"flags_text", "evaluate_at_end"}


def _train_flags():
    return {flag.name for flag in flags.FLAGS.get_flags_for_module("alexnet_tf.train")}


def test_every_train_flag_is_a_config_field_and_back():
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    assert _train_flags() - COMMAND_ONLY_FLAGS == fields - COMPUTED_FIELDS


def test_config_from_flags_takes_each_field_from_its_flag():
    values = flags.FlagValues()
    flags.DEFINE_string("model_dir", None, "", flag_values=values)
    flags.DEFINE_list("conv_filters", ["96", "256", "384", "384", "256"], "", flag_values=values)
    flags.DEFINE_list("freeze_layers", [], "", flag_values=values)
    flags.DEFINE_integer("batch_size", 128, "", flag_values=values)
    values(["prog", "--model_dir=runs/x", "--conv_filters=8,8,16,16,8", "--freeze_layers=conv1,conv2",
            "--batch_size=6"])
    config = configs.config_from_flags(TrainConfig, values, data_dir="data/d")
    assert config.model_dir == "runs/x" and config.batch_size == 6 and config.data_dir == "data/d"
    assert config.conv_filters == (8, 8, 16, 16, 8)  # ints, not the flag's strings
    assert config.freeze_layers == ("conv1", "conv2")
    assert config.epochs == TrainConfig.__dataclass_fields__["epochs"].default  # no flag: the default
    with pytest.raises(TypeError, match="no fields.*'not_a_field'"):
        configs.config_from_flags(TrainConfig, values, not_a_field=1)


def test_flagfile_text_lists_every_value():
    values = flags.FlagValues()
    flags.DEFINE_integer("epochs", 90, "", flag_values=values)
    flags.DEFINE_string("init_from", None, "", flag_values=values)
    flags.DEFINE_list("reinit_layers", ["fc8"], "", flag_values=values)
    values(["prog", "--epochs=3"])
    text = configs.flagfile_text([values[name] for name in ("reinit_layers", "epochs", "init_from")], "Header.")
    assert text == "# Header.\n--epochs=3\n--reinit_layers=fc8\n"
