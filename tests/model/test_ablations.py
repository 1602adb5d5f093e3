"""The paper's ablations (issue 25): each recipe in flags/ablations/ builds the network its
section describes, checked against the paper's arithmetic, and trains."""

import copy
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from alexnet_tf import build_alexnet
from alexnet_tf import run_dir
from alexnet_tf import train  # noqa: F401  (defines the train flags)
from alexnet_tf.cli import configs
from alexnet_tf.model.spec import AlexNetSpec
from alexnet_tf.training import TrainConfig, start
from pipelines import augment
from tests.commands import REPO, run_command

RECIPES = sorted(glob.glob(os.path.join(REPO, "flags", "ablations", "*.flags")))
# What each recipe changes, as the network and training fields it sets (the rest: the paper's).
EXPECTED_CHANGES = {
    "no_lrn": {"lrn": False},
    "non_overlapping_pooling": {"pool_size": 2},
    "one_tower": {"groups": 1, "conv_filters": (48, 128, 192, 192, 256)},
    "no_lighting": {"lighting_stddev": 0.0},
    "no_flips": {"random_flip": False},
    "no_random_crops": {"random_crop": False},
    "no_dropout": {"dropout": 0.0},
    "no_conv3": {"removed_layers": ("conv3",)},
    "no_conv4": {"removed_layers": ("conv4",)},
    "no_conv5": {"removed_layers": ("conv5",)},
    "tanh": {"activation": "tanh"},
}


def _recipe_config(path, *extra):
    """The TrainConfig the train command makes of `path` (nested flagfiles resolved as the
    command does, from the repository) and `extra` flags."""
    values = flags.FlagValues()
    for flag in flags.FLAGS.get_flags_for_module("alexnet_tf.train"):
        values[flag.name] = copy.deepcopy(flag)
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        values(["train", f"--flagfile={path}", "--model_dir=unused", "--synthetic", *extra])
    finally:
        os.chdir(cwd)
    return configs.config_from_flags(TrainConfig, values)


def _paper_arithmetic(filters, *, groups, removed=(), fc_units=4096, num_classes=1000, pool5=6):
    """Parameters per layer of the paper's network (Section 3.5) with `filters` kernels, by hand:
    conv k x k x (inputs / groups) x filters + filters; conv1, conv3 ungrouped."""
    kernels = {"conv1": 11, "conv2": 5, "conv3": 3, "conv4": 3, "conv5": 3}
    grouped = {"conv2", "conv4", "conv5"}
    counts, inputs = {}, 3
    for (name, size), width in zip(kernels.items(), filters):
        if name in removed:
            continue
        layer_groups = groups if name in grouped else 1
        counts[name] = size * size * (inputs // layer_groups) * width + width
        inputs = width
    counts["fc6"] = pool5 * pool5 * inputs * fc_units + fc_units
    counts["fc7"] = fc_units * fc_units + fc_units
    counts["fc8"] = fc_units * num_classes + num_classes
    return counts


def test_there_is_a_recipe_per_ablation_each_changing_one_thing():
    assert {os.path.basename(p)[:-len(".flags")] for p in RECIPES} == set(EXPECTED_CHANGES)
    paper = _recipe_config(os.path.join("flags", "alexnet_imagenet.flags"))
    for path in RECIPES:
        name = os.path.basename(path)[:-len(".flags")]
        text = open(path).read()
        assert "--flagfile=flags/alexnet_imagenet.flags" in text
        # The paper's section is on the line above the override.
        lines = [line for line in text.splitlines() if line.strip()]
        first_override = next(i for i, line in enumerate(lines) if line.startswith("--") and "flagfile" not in line)
        assert "Section" in lines[first_override - 1] or "Section" in lines[first_override - 2], name
        config = _recipe_config(path)
        changed = {field: getattr(config, field) for field in TrainConfig.__dataclass_fields__
                   if getattr(config, field) != getattr(paper, field)}
        assert changed == EXPECTED_CHANGES[name], name


@pytest.mark.parametrize("name", sorted(EXPECTED_CHANGES))
def test_each_recipe_builds_the_network_of_the_papers_arithmetic(name):
    config = _recipe_config(os.path.join("flags", "ablations", f"{name}.flags"))
    spec = start.network_of_config(config, num_classes=1000)
    model = build_alexnet(spec)
    counts = {layer.name: layer.count_params() for layer in model.layers if layer.count_params()}
    assert counts == _paper_arithmetic(spec.conv_filters, groups=spec.groups, removed=spec.removed_layers), name
    # The paper's sizes whatever the pooling: 55 -> 27 -> 13 -> 6.
    sizes = {layer.name: layer.output.shape[1] for layer in model.layers if layer.name.startswith(("conv", "pool"))}
    assert sizes == {name: size for name, size in {"conv1": 55, "pool1": 27, "conv2": 27, "pool2": 13, "conv3": 13,
                                                   "conv4": 13, "conv5": 13, "pool5": 6}.items()
                     if name not in spec.removed_layers}
    activations = {layer.activation.__name__ for layer in model.layers
                   if layer.name.startswith(("conv", "fc6", "fc7")) and hasattr(layer, "activation")}
    assert activations == {spec.activation}
    if name == "non_overlapping_pooling":
        assert model.get_layer("pool1").pool_size == (2, 2)


def test_the_papers_parameter_counts():
    # The paper's "60 million parameters", and Section 3.2's one-tower net (PAPER.md).
    assert sum(_paper_arithmetic((96, 256, 384, 384, 256), groups=2).values()) == 60_965_224
    assert sum(_paper_arithmetic((48, 128, 192, 192, 256), groups=1).values()) == 59_798_312
    assert build_alexnet(1000).count_params() == 60_965_224


def test_a_removed_layer_hands_its_input_on_and_keeps_the_other_seeds():
    full = build_alexnet(AlexNetSpec(num_classes=5, image_size=64, conv_filters=(8, 8, 16, 16, 8), fc_units=16),
                         seed=1)
    without = build_alexnet(AlexNetSpec(num_classes=5, image_size=64, conv_filters=(8, 8, 16, 16, 8), fc_units=16,
                                        removed_layers=("conv4",)), seed=1)
    assert "conv4" not in {layer.name for layer in without.layers}
    assert without.get_layer("conv5").kernel.shape == (3, 3, 8, 8)  # conv3's 16 channels over 2 groups
    for name in ("conv1", "conv2", "conv3", "fc7", "fc8"):  # the same draws as the full net's
        np.testing.assert_array_equal(without.get_layer(name).kernel.numpy(), full.get_layer(name).kernel.numpy())
    with pytest.raises(ValueError, match="removed_layers"):
        AlexNetSpec(removed_layers=("conv2",))
    with pytest.raises(ValueError, match="pool_size"):
        AlexNetSpec(pool_size=4)
    with pytest.raises(ValueError, match="activation"):
        AlexNetSpec(activation="gelu")


def test_the_augmentation_switches():
    seeds = tf.constant([[7, 3], [8, 3]], tf.int64)
    flips, alphas = augment.draw_flips_and_alphas(64, seeds)
    no_flips, same_alphas = augment.draw_flips_and_alphas(64, seeds, flip=False)
    assert 0 < int(tf.reduce_sum(tf.cast(flips, tf.int32))) < 64 and not bool(tf.reduce_any(no_flips))
    np.testing.assert_array_equal(alphas.numpy(), same_alphas.numpy())  # the lighting is the flipping run's
    _, no_light = augment.draw_flips_and_alphas(64, seeds, stddev=0.0)
    assert not np.any(no_light.numpy())


def test_training_without_random_crops_sees_the_centre_crops(tiny_dataset):
    from pipelines import dataset as datasets
    from pipelines import schema

    source = datasets.Source(schema.split_file_pattern(tiny_dataset, "train"))
    options = dict(batch_size=35, image_size=64, seed=2, output_dtype=tf.uint8)
    centre = next(iter(datasets.build_train_dataset(source, datasets.TrainOptions(random_crop=False, **options))))
    random = next(iter(datasets.build_train_dataset(source, datasets.TrainOptions(**options))))
    # The same examples in the same order (labels), each the evaluation's centre crop.
    np.testing.assert_array_equal(centre[1].numpy(), random[1].numpy())
    evaluation = next(iter(datasets.build_eval_dataset(source, datasets.EvalOptions(
        batch_size=35, image_size=64, output_dtype=tf.uint8))))
    as_set = lambda images: sorted(image.tobytes() for image in images.numpy())  # noqa: E731
    assert as_set(centre[0]) == as_set(evaluation[0])
    assert as_set(random[0]) != as_set(evaluation[0])


# A tiny width for each recipe, the recipe's own ratios kept: its changes and a step of training.
TINY = ["--image_size=64", "--fc_units=16", "--batch_size=2", "--epochs=1", "--steps_per_epoch=1",
        "--num_classes=5", "--init=he", "--eval_steps=1", "--log_every_steps=1"]


def _tiny_filters(config):
    return "--conv_filters=" + ",".join(str(max(2, f // 16)) for f in config.conv_filters)


@pytest.mark.parametrize("name", sorted(EXPECTED_CHANGES))
def test_each_recipe_trains_a_step(name, tmp_path):
    from alexnet_tf import training

    path = os.path.join("flags", "ablations", f"{name}.flags")
    config = _recipe_config(path, *TINY, _tiny_filters(_recipe_config(path)))
    config = TrainConfig(**{**config.__dict__, "model_dir": str(tmp_path / "run"), "flags_text": None})
    result = training.train(config)
    assert result.steps_done == 1
    model, _, _ = run_dir.load_model(config.model_dir)  # the recorded network, its trained weights
    weights = [w.numpy() for layer in model.layers for w in layer.weights]
    # conv1-conv5 (less the removed one) and fc6-fc8, kernel and bias each, all finite.
    assert len(weights) == 2 * (8 - len(config.removed_layers))
    assert all(np.isfinite(w).all() for w in weights)
    recorded = run_dir.network_of(run_dir.read_model_spec(config.model_dir))
    assert recorded == start.network_of_config(config, num_classes=5)


def test_a_recipe_through_the_command(tmp_path):
    path = os.path.join("flags", "ablations", "no_conv4.flags")
    result = run_command("alexnet_tf.train", f"--flagfile={path}", "--synthetic", f"--model_dir={tmp_path / 'run'}",
                         *TINY, _tiny_filters(_recipe_config(path)), "--export=false")
    assert "epoch 1" in result.stderr
    text = (tmp_path / "run" / "flags.txt").read_text()
    assert "--removed_layers=conv4" in text.splitlines() and "--lrn" in text.splitlines()
