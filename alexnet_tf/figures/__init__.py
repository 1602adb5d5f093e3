"""The paper's figures from a run: conv1's kernels (Figure 3), predictions and nearest
neighbours (Figure 4), learning curves; and `write_report`, the page that shows them all
(`python -m alexnet_tf.report`)."""

from alexnet_tf.figures.kernels import KernelFigure, conv1_figure, kernel_figure
from alexnet_tf.figures.curves import EpochCurves, read_curves
from alexnet_tf.figures.report import ReportConfig, write_report

__all__ = ["EpochCurves", "KernelFigure", "ReportConfig", "conv1_figure", "kernel_figure", "read_curves",
           "write_report"]
