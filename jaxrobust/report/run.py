"""What a job's report says at the top: overview, results by model, flags, footer,
and the saliency figures of the trained models."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np


def _short(value) -> object:
    """A summary value for a table: numbers as they are, sentences as one word."""
    if isinstance(value, str):
        return "never" if value.startswith("none") else "undefined"
    return value


def _curves(per: dict) -> dict:
    """A model's per-corruption summaries (the entries with an AUC)."""
    return {name: s for name, s in per.items() if isinstance(s, dict) and "auc" in s}


def leaderboard(summary: dict, trained: dict):
    """One row per model, as RobustBench presents robustness: clean accuracy, the test
    task's accuracy (trained models), mean accuracy over the corruptions and the
    corruption with the lowest, mCE and relative mCE against the last model, and the
    benchmark's (AlexNet-normalised for ImageNet-C, unnormalised for the others).
    `corruption_table` has the per-corruption numbers. A cell is "undefined" where a
    summary has no reference (summary.json says why)."""
    import pandas as pd

    rows = []
    for model, per in summary.items():
        if model.startswith("_"):
            continue
        row = {"model": model, "clean accuracy": _short(per.get("clean_accuracy"))}
        history = trained[model].history if model in trained else []
        if history:
            row["test accuracy (task)"] = history[-1]["test_accuracy"]
        curves = _curves(per)
        if curves:
            row["mean accuracy"] = float(np.mean([s["mean_accuracy"] for s in curves.values()]))
            row["lowest: corruption"] = min(curves, key=lambda n: curves[n]["mean_accuracy"])
        for key, s in per.items():
            if key.startswith("corruption_error_vs_"):
                row["mCE"] = _short(s["mCE"])
                row["relative mCE"] = _short(s["relative_mCE"])
            elif key.startswith("corruption_error_"):
                kind = key.rsplit("_", 1)[1]  # alexnet / unnormalised
                row[f"mCE ({kind})"] = _short(s["mCE"])
                row[f"relative mCE ({kind})"] = _short(s["relative_mCE"])
        rows.append(row)
    return pd.DataFrame(rows)


def corruption_table(summary: dict):
    """One row per (model, corruption): mean accuracy, AUC over the levels, critical
    level and critical SSIM. A cell is "never" where accuracy never crosses the
    critical fraction and "undefined" where there is no clean reference."""
    import pandas as pd

    return pd.DataFrame([
        {"model": model, "corruption": name, "mean accuracy": s["mean_accuracy"],
         "AUC": s["auc"], "critical level": _short(s["critical_level"]),
         "critical SSIM": _short(s["critical_ssim"])}
        for model, per in summary.items() if not model.startswith("_")
        for name, s in _curves(per).items()])


def model_line(name: str, result) -> str:
    """One model in words: architecture, width, parameters, epochs, train/test accuracy."""
    params = sum(int(np.size(p)) for p in jax.tree.leaves(result.params))
    h = result.history[-1] if result.history else {}
    return (f"{name} ({result.metadata.get('model', name)}, width "
            f"{result.metadata.get('width')}, {params:,} parameters, {len(result.history)} "
            f"epochs; train accuracy {h.get('train_accuracy', float('nan')):.3f}, test "
            f"accuracy {h.get('test_accuracy', float('nan')):.3f})")


def run_overview(config, ds, test_idx, task_train, trained: dict, seconds: float, *,
                 resumed: bool = False) -> list:
    """`(label, value)` rows of what the main job ran, for the report's top; `resumed`:
    the run continued earlier work in its folder (the time is this run's only)."""
    models = [model_line(name, r) for name, r in trained.items()]
    meaning = ("the fraction of corrupted test images whose corruption the model names "
               "(so it rises with the level: a faint corruption is hard to see); clean "
               "accuracy: the fraction of clean test images called original"
               if config.sweep.target == "corruption_type" else
               "the fraction of corrupted test images that keep their label; clean "
               "accuracy: the same on the clean images")
    return [("Data", f"{ds.source}: {len(ds.images)} images of {tuple(ds.images.shape[1:])}, "
                     f"classes {', '.join(ds.class_names)}; {len(test_idx)} clean test images "
                     "swept"),
            ("Task", f"{config.sweep.target}: classes {', '.join(task_train.class_names)}; "
                     f"{len(task_train.images)} training images"),
            ("Accuracy means", meaning),
            *[("Model", m) for m in models],
            ("Time", f"{seconds:.0f} s in this run, which resumed earlier work in the folder "
                     "(checkpoints, sweep cells, drift curves)" if resumed else
                     f"{seconds:.0f} s in all")]


def training_flags(trained: dict, num_classes: int) -> list[str]:
    """Sentences about models that overfit or sit at chance on their test task."""
    flags = []
    for name, r in trained.items():
        if not r.history:
            continue
        h = r.history[-1]
        if h["train_accuracy"] - h["test_accuracy"] > 0.15:
            flags.append(f"{name} overfits: train accuracy {h['train_accuracy']:.3f}, test "
                         f"{h['test_accuracy']:.3f}.")
        if h["test_accuracy"] <= 1.0 / num_classes + 0.05:
            flags.append(f"{name} is at chance on the test task ({h['test_accuracy']:.3f}; "
                         f"chance {1.0 / num_classes:.3f}): train longer or check the data.")
    return flags


def run_flags(summary: dict, trained: dict, num_classes: int) -> list[str]:
    """Sentences about likely problems: overfitting, chance level, curves that never cross."""
    flags = training_flags(trained, num_classes)
    for model, per in summary.items():
        if model.startswith("_"):
            continue
        for c, s in _curves(per).items():
            if isinstance(s.get("critical_level"), str):
                flags.append(f"{model} / {c}: critical level {s['critical_level']}.")
        for key, s in per.items():
            relative = s.get("relative_mCE") if key.startswith("corruption_error_") else None
            if isinstance(relative, float) and relative < 0:
                flags.append(f"{model}: relative mCE {relative:.3g} < 0: its error on the "
                             "corrupted images is below its error on the clean ones, so "
                             "the error a corruption adds says nothing about robustness "
                             "here.")
    return flags


def run_footer(config) -> list:
    """`(label, value)` rows: versions, devices, protocol, seed, command line."""
    import importlib.metadata as md
    import sys
    from collections import Counter

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    kinds = Counter(d.device_kind if d.device_kind.lower() == d.platform else
                    f"{d.platform} {d.device_kind}" for d in jax.devices())
    return [("Versions", ", ".join(f"{n} {version(n)}" for n in
                                   ("jaxrobust", "jax", "jaxlib", "flax", "optax"))),
            ("Devices", ", ".join(f"{n} x {k}" for k, n in kinds.items())),
            ("Protocol", config.sweep.protocol), ("Seed", config.seed),
            ("Command", " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]))]


def saliency_figures(trained: dict, task, out_dir: str, *, per_class: int = 2,
                     wrong_per_class: int = 1, predictions: dict | None = None) -> list:
    """Saliency grids of test-task images, per model: per class `per_class` correctly
    and `wrong_per_class` wrongly classified examples, each captioned with its class,
    level, SSIM to its clean image and the prediction.

    As in the study's annex (figures 35-38): the gradient magnitude of the predicted
    class's logit (the logit, not the softmax, as the study swapped softmax for linear).
    `predictions`: model -> its predicted classes on `task.images`, when already known.
    """
    from jaxrobust import attribution, report

    figures = []
    names = task.class_names
    for name, result in trained.items():
        if predictions is not None and name in predictions:
            pred = np.asarray(predictions[name])
        else:
            logits = jax.jit(result.apply_fn)(result.params, jnp.asarray(task.images))
            pred = np.asarray(jnp.argmax(logits, -1))
        picks = []
        for c in range(len(names)):
            right = np.nonzero((task.labels == c) & (pred == c))[0][:per_class]
            wrong = np.nonzero((task.labels == c) & (pred != c))[0][:wrong_per_class]
            picks += [*right, *wrong]
        if not picks:
            continue
        picks = np.asarray(picks)
        # jitted: run op by op, Xception's forward and backward passes took ~20 s
        maps = jax.jit(attribution.saliency, static_argnums=0)(
            result.apply_fn, result.params, task.images[picks], pred[picks])
        ssim = task.ssim if task.ssim is not None else np.full(len(task.images), np.nan)
        captions = [f"{names[task.labels[i]]}, level {task.levels[i]:.3g}, SSIM {ssim[i]:.2f}"
                    f"\n-> {names[pred[i]]} " + ("(right)" if pred[i] == task.labels[i]
                                                 else "(WRONG)") for i in picks]
        path = os.path.join(out_dir, f"saliency_{name}.png")
        report.plot_saliency_grid(task.images[picks], maps, captions, path)
        figures.append((path, f"{name}: saliency of the predicted class on test-task "
                              f"images, {per_class} right and up to {wrong_per_class} wrong "
                              "per class"))
    return figures


def sweep_figures(table, per_image: dict, class_names: dict, out_dir: str, *,
                  intervals: dict | None = None, critical: tuple | None = None,
                  fraction: float = 0.5) -> list:
    """The figures of a sweep, written into `out_dir`, as `(path, caption[, table])`:
    accuracy against level (bootstrap bands from `intervals`) and against SSIM (one
    panel per model; `critical` = `(table, points)` of `critical_ssim_table` marks the
    critical SSIMs), SSIM against level, and the predicted classes per level."""
    from jaxrobust import report

    levels = {name: rows["level"].to_numpy() for name, rows in
              table[table["model"] == table["model"].iloc[0]].groupby("corruption",
                                                                      sort=False)}
    ssim_caption = "Accuracy against mean SSIM, one panel per model"
    ssim_figure = (report.plot_accuracy_vs_ssim(
        table, os.path.join(out_dir, "accuracy_vs_ssim.png"),
        critical=critical[1] if critical else None), ssim_caption)
    if critical:
        ssim_figure = (ssim_figure[0], ssim_caption + f"; a cross marks each critical SSIM, "
                       f"where accuracy crosses {fraction:g} x the clean accuracy "
                       "(interpolated)", critical[0])
    return [
        (report.plot_accuracy_vs_level(table, os.path.join(out_dir, "accuracy_vs_level.png"),
                                       ci=intervals),
         "Accuracy against corruption level (shaded: 95% bootstrap interval)"),
        ssim_figure,
        (report.plot_ssim_vs_level(table, os.path.join(out_dir, "ssim_vs_level.png")),
         "SSIM to the clean image against corruption level (bars: one standard deviation)"),
        (report.plot_confusion(per_image, class_names, os.path.join(out_dir, "confusion.png"),
                               levels=levels),
         "Predicted class of the corrupted test images at each level (fraction of images)"),
    ]
