"""The report's tables, flags and page structure, on summaries with known answers."""

import base64
import re
import types

import numpy as np
import pandas as pd

from jaxrobust import report

SUMMARY = {
    "a": {"clean_accuracy": 0.9,
          "blur": {"mean_accuracy": 0.5, "auc": 0.4, "critical_level": 2.0,
                   "critical_ssim": 0.8},
          "noise": {"mean_accuracy": 0.7, "auc": 0.6,
                    "critical_level": "none: accuracy never falls below 0.45",
                    "critical_ssim": "none: accuracy never falls below 0.45"},
          "corruption_error_vs_b": {"mCE": 0.8, "relative_mCE": -0.5}},
    "b": {"clean_accuracy": 0.8,
          "blur": {"mean_accuracy": 0.6, "auc": 0.5, "critical_level": 1.0,
                   "critical_ssim": 0.9},
          "noise": {"mean_accuracy": 0.4, "auc": 0.3, "critical_level": 0.1,
                    "critical_ssim": 0.95},
          "corruption_error_vs_b": {"mCE": 1.0, "relative_mCE": 1.0}},
    "_protocol": "Protocol: continuous.",
}


def trained(train, test):
    return types.SimpleNamespace(history=[{"train_accuracy": train, "test_accuracy": test}])


def test_tables_one_row_per_model_and_per_corruption():
    board = report.leaderboard(SUMMARY, {"a": trained(0.99, 0.7)})
    assert list(board["model"]) == ["a", "b"]
    assert np.allclose(board["mean accuracy"], [0.6, 0.5])
    assert list(board["lowest: corruption"]) == ["blur", "noise"]
    assert board.loc[0, "test accuracy (task)"] == 0.7 and np.isnan(
        board.loc[1, "test accuracy (task)"])
    assert list(board["relative mCE"]) == [-0.5, 1.0]
    per = report.corruption_table(SUMMARY)
    assert [(r.model, r.corruption) for r in per.itertuples()] == [
        ("a", "blur"), ("a", "noise"), ("b", "blur"), ("b", "noise")]
    assert per.loc[1, "critical level"] == "never" and per.loc[3, "AUC"] == 0.3


def test_flags_name_the_likely_problems():
    flags = report.run_flags(SUMMARY, {"a": trained(0.99, 0.7), "b": trained(0.3, 0.26)}, 4)
    text = "\n".join(flags)
    assert "a overfits: train accuracy 0.990, test 0.700" in text
    assert "b is at chance on the test task (0.260; chance 0.250)" in text
    assert "a / noise: critical level none: accuracy never falls below 0.45" in text
    assert "a: relative mCE -0.5 < 0" in text
    assert len(flags) == 4


def test_page_puts_results_first_folds_long_tables_and_embeds_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = str(tmp_path / "f.png")
    fig.savefig(png)
    plt.close(fig)
    long = pd.DataFrame({"level": np.arange(30) / 7, "accuracy": np.linspace(0, 1, 30)})
    page_path = report.write_report(
        str(tmp_path / "report.html"), title="t", figures=[(png, "one caption")],
        tables=[("Sweep results", long, "results.csv")], summary=SUMMARY,
        summary_file="summary.json", config={"seed": 0},
        overview=[("Data", "x")],
        results=[("Results by model", report.leaderboard(SUMMARY, {}))],
        flags=["f"], footer=[("Seed", 0)])
    page = open(page_path).read()
    assert (page.index("What was run") < page.index("Results by model")
            < page.index("Check these") < page.index("Figures") < page.index("Sweep results"))
    assert "<details><summary>30 rows" in page and "href='results.csv'" in page
    assert "0.143" in page and "0.142857" not in page  # 3 significant digits
    assert "_protocol" not in page and "seed: 0" in page  # no JSON dump; config as YAML
    shown = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(shown) == 1 and base64.b64decode(shown[0]).startswith(b"\x89PNG")
    assert page.count("<figcaption>") == 1
