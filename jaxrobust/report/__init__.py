"""Plots (PNG) and the self-contained HTML report."""

from jaxrobust.report.html import write_report
from jaxrobust.report.panels import (
    plot_attribution_panels,
    plot_edit_panels,
    plot_gallery,
    plot_kernel_protocol,
    plot_saliency_grid,
)
from jaxrobust.report.plots import (
    plot_accuracy_and_drift,
    plot_accuracy_vs_level,
    plot_accuracy_vs_ssim,
    plot_confusion,
    plot_prerendered,
    plot_ssim_vs_level,
    plot_test_confusion,
    plot_training_curves,
)
from jaxrobust.report.run import (
    corruption_table,
    leaderboard,
    model_line,
    run_flags,
    run_footer,
    run_overview,
    saliency_figures,
    sweep_figures,
    training_flags,
)

__all__ = [
    "plot_accuracy_and_drift",
    "plot_accuracy_vs_level",
    "plot_attribution_panels",
    "plot_accuracy_vs_ssim",
    "plot_confusion",
    "plot_edit_panels",
    "plot_gallery",
    "plot_kernel_protocol",
    "plot_prerendered",
    "plot_saliency_grid",
    "plot_ssim_vs_level",
    "plot_test_confusion",
    "plot_training_curves",
    "corruption_table",
    "leaderboard",
    "model_line",
    "run_flags",
    "run_footer",
    "run_overview",
    "saliency_figures",
    "sweep_figures",
    "training_flags",
    "write_report",
]
