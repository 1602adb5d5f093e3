"""The paper's figures from a run (issue 25): Figure 3's kernels, Figure 4, the curves, the page."""

import html.parser
import os

import numpy as np
import pytest
from PIL import Image

from alexnet_tf import figures, run_dir, training
from alexnet_tf.figures import kernels
from tests.commands import run_command


def test_each_kernel_is_its_own_tile_stretched_and_scaled_the_towers_apart():
    kernel = np.random.default_rng(0).normal(size=(11, 11, 3, 96)).astype(np.float32)
    figure = figures.kernel_figure(kernel, groups=2)
    assert len(figure.boxes) == 96 and figure.tile == 44
    stretched = np.round(kernels.stretch(np.transpose(kernel, (3, 0, 1, 2))) * 255).astype(np.uint8)
    for index, (top, left) in enumerate(figure.boxes):
        tile = figure.image[top:top + 44, left:left + 44]
        # Nearest neighbour: every 4x4 block is one kernel pixel.
        np.testing.assert_array_equal(tile, stretched[index].repeat(4, axis=0).repeat(4, axis=1))
    tops = sorted({top for top, _ in figure.boxes})
    assert len(tops) == 6  # 3 rows per tower
    assert tops[3] - tops[2] == 44 + kernels.TOWER_GAP  # the towers apart
    assert {top for top, _ in figure.boxes[:48]} == set(tops[:3])  # kernels 0-47: the first tower
    one = figures.kernel_figure(kernel, groups=1)
    one_tops = sorted({top for top, _ in one.boxes})
    assert np.all(np.diff(one_tops) == 44 + kernels.GAP)  # one grid


@pytest.fixture(scope="module")
def run_96(tiny_dataset, tmp_path_factory):
    """A tiny trained run with the paper's 96 conv1 kernels in two towers."""
    model_dir = str(tmp_path_factory.mktemp("run_96") / "run")
    training.train(training.TrainConfig(
        model_dir=model_dir, data_dir=tiny_dataset, image_size=64, conv_filters=(96, 8, 16, 16, 8), fc_units=32,
        init="he", learning_rate=0.001, batch_size=5, epochs=3, steps_per_epoch=2, plateau_patience=1,
        plateau_min_delta=0.9, max_lr_reductions=5, evaluate_at_end=False))
    return model_dir


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.external = [], []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href"):
                (self.external if "://" in value or value.startswith("//") else self.sources).append(value)


def test_the_report_of_a_trained_run(run_96, tiny_dataset):
    page = figures.write_report(figures.ReportConfig(model_dir=run_96, data_dir=tiny_dataset, batch_size=16))
    assert page == os.path.join(run_96, "report", "index.html")
    parser = _Images()
    text = open(page, encoding="utf-8").read()
    parser.feed(text)
    assert not parser.external  # nothing fetched
    assert set(parser.sources) == {"figure3_conv1.png", "figure4_predictions.png", "figure4_neighbours.png",
                                   "learning_curves.png"}
    for source in parser.sources:
        assert Image.open(os.path.join(run_96, "report", source)).size[0] > 100, source
    # Figure 3: the run's 96 kernels, each a 44-px tile of its own weights.
    model, spec, _ = run_dir.load_model(run_96)
    conv1 = np.asarray(Image.open(os.path.join(run_96, "report", "figure3_conv1.png")).convert("RGB"))
    expected = figures.kernel_figure(model.get_layer("conv1").kernel.numpy(), groups=2)
    assert len(expected.boxes) == 96
    np.testing.assert_array_equal(conv1, expected.image)
    # The curves cover every epoch, each reduction marked.
    curves = figures.read_curves(run_96)
    assert curves.epochs == (1, 2, 3)
    assert not np.isnan(curves.validation_top1).any() and not np.isnan(curves.train_top1).any()
    assert "3 epochs" in text
    assert curves.reduction_epochs and f"divided ({len(curves.reduction_epochs)} times)" in text
    # Figure 4: the eight images the page names, and five queries with six neighbours each.
    assert text.count("<li>") >= 8 + 5


def test_the_report_of_imported_weights_through_the_command(imported_run, tiny_dataset, tmp_path):
    import shutil

    imported_run = str(shutil.copytree(imported_run, tmp_path / "imported"))  # (the fixture is shared)
    result = run_command("alexnet_tf.report", f"--model_dir={imported_run}", f"--data_dir={tiny_dataset}",
                         "--batch_size=16")
    page = os.path.join(imported_run, "report", "index.html")
    assert f"wrote {page}" in result.stdout
    text = open(page, encoding="utf-8").read()
    assert "Learning curves</h2>\n<p>None: this run holds weights imported from" in text
    assert "learning_curves.png" not in text
    for name in ("figure3_conv1.png", "figure4_predictions.png", "figure4_neighbours.png"):
        assert name in text and os.path.exists(os.path.join(imported_run, "report", name))
