"""Matplotlib figures of a sweep table (one PNG each)."""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str, *, dpi: int = 110) -> str:
    """Writes `fig` to `path` (PNG) and closes it; returns `path`."""
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)
    return path


def _level_label(name: str) -> str:
    from jaxrobust import corruptions

    return corruptions.get(name).level_meaning.split(",")[0].split("(")[0].strip()


def plot_accuracy_vs_level(table, path: str, *, ci: dict | None = None) -> str:
    """Accuracy against level, one panel per corruption, one line per model."""
    plt = _plt()
    names = list(dict.fromkeys(table["corruption"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for model, rows in table[table["corruption"] == name].groupby("model", sort=False):
            line, = ax.plot(rows["level"], rows["accuracy"], marker=".", label=model)
            if ci and (model, name) in ci:
                lo, hi = ci[model, name]
                ax.fill_between(rows["level"], lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_title(name)
        ax.set_xlabel(_level_label(name))
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def _corruption_colors(names) -> dict:
    """One colour per corruption, the same in every figure (names in the table's order)."""
    return {n: f"C{i % 10}" for i, n in enumerate(names)}


def plot_accuracy_vs_ssim(table, path: str, critical: dict | None = None) -> str:
    """Accuracy against mean SSIM to the clean image: one panel per model, one line
    per corruption (same colour per corruption in every panel).

    `critical`: `(model, corruption) -> (ssim, accuracy)` points marked with a cross
    (the critical SSIM and the threshold accuracy it is defined by).
    """
    plt = _plt()
    models = list(dict.fromkeys(table["model"]))
    colors = _corruption_colors(dict.fromkeys(table["corruption"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.8 * len(models), 3.8), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        rows = table[table["model"] == model]
        for name, r in rows.groupby("corruption", sort=False):
            order = np.argsort(r["ssim_mean"].to_numpy())
            ax.plot(r["ssim_mean"].to_numpy()[order], r["accuracy"].to_numpy()[order],
                    marker=".", color=colors[name], label=name)
            if critical and (model, name) in critical:
                ax.plot(*critical[model, name], "x", color=colors[name], markersize=10,
                        markeredgewidth=2)
        ax.set_title(model)
        ax.set_xlabel("mean SSIM to the clean image")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("accuracy")
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def plot_ssim_vs_level(table, path: str) -> str:
    """Mean SSIM (± std) against level, one panel per corruption."""
    plt = _plt()
    first = table[table["model"] == table["model"].iloc[0]]
    names = list(dict.fromkeys(first["corruption"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        r = first[first["corruption"] == name]
        ax.errorbar(r["level"], r["ssim_mean"], yerr=r["ssim_std"], marker=".", capsize=2)
        ax.set_title(name)
        ax.set_xlabel(_level_label(name))
        ax.set_ylabel("SSIM to the clean image")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def plot_confusion(per_image: dict, class_names: dict, path: str, *,
                   levels: dict | None = None) -> str:
    """Predicted classes of the corrupted images: one heatmap per (model, corruption).

    Rows are the swept levels (low to high, labelled with the level where `levels`
    gives them: corruption name -> levels), columns the predicted classes; each cell
    is the fraction of images. Corruptions keep the sweep's order.
    """
    plt = _plt()
    keys = [k for k in per_image if k.endswith("/pred") and not k.startswith("clean/")]
    models = list(dict.fromkeys(k.split("/")[1] for k in keys))
    names = list(dict.fromkeys(k.split("/")[0] for k in keys))
    fig, axes = plt.subplots(len(models), len(names), squeeze=False, layout="constrained",
                             figsize=(4.2 * len(names), 3.6 * len(models)))
    for i, m in enumerate(models):
        classes = class_names[m]
        for j, name in enumerate(names):
            pred = per_image[f"{name}/{m}/pred"]
            counts = np.stack([np.bincount(p, minlength=len(classes)) for p in pred])
            frac = counts / np.maximum(counts.sum(1, keepdims=True), 1)
            ax = axes[i, j]
            im = ax.imshow(frac, aspect="auto", vmin=0, vmax=1, cmap="viridis",
                           origin="lower")
            ax.set_xticks(range(len(classes)))
            ax.set_xticklabels(classes, rotation=35, ha="right", fontsize=9)
            if levels is not None and name in levels:
                lv = np.asarray(levels[name])
                ticks = np.unique(np.linspace(0, len(lv) - 1, min(6, len(lv))).round()
                                  .astype(int))
                ax.set_yticks(ticks)
                ax.set_yticklabels([f"{lv[t]:.3g}" for t in ticks], fontsize=9)
                ax.set_ylabel(_level_label(name), fontsize=9)
            else:
                ax.set_ylabel("sweep step", fontsize=9)
            ax.set_title(f"{m}: {name}", fontsize=11)  # legible on a 900 px page
    fig.colorbar(im, ax=axes, shrink=0.8, label="fraction predicted")
    return _save(fig, path, dpi=100)


def plot_test_confusion(results: dict, path: str) -> str:
    """The clean test set's confusion matrix, one panel per model.

    Args:
        results: model -> `(true (N,), predicted (N,), class_names)`.

    Each row (a true class) is normalised to fractions; cells show the count.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(4.4 * len(results), 4.0),
                             squeeze=False, layout="constrained")
    for ax, (model, (true, pred, classes)) in zip(axes[0], results.items(), strict=True):
        k = len(classes)
        counts = np.zeros((k, k), int)
        np.add.at(counts, (np.asarray(true), np.asarray(pred)), 1)
        frac = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        im = ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
        for a in range(k):
            for b in range(k):
                ax.text(b, a, str(counts[a, b]), ha="center", va="center", fontsize=8,
                        color="white" if frac[a, b] > 0.5 else "black")
        ax.set_xticks(range(k))
        ax.set_xticklabels(classes, rotation=35, ha="right", fontsize=7)
        ax.set_yticks(range(k))
        ax.set_yticklabels(classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        accuracy = float(np.mean(np.asarray(true) == np.asarray(pred)))
        ax.set_title(f"{model} (accuracy {accuracy:.3f})", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="fraction of the true class")
    return _save(fig, path, dpi=100)


def plot_training_curves(histories: dict, path: str) -> str:
    """Loss and accuracy per epoch, train (solid) and test (dashed), one colour per model.

    Args:
        histories: model -> list of per-epoch dicts with `epoch`, `train_loss`,
            `test_loss`, `train_accuracy`, `test_accuracy`.
    """
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.6))
    for i, (model, history) in enumerate(histories.items()):
        if not history:
            continue
        epochs = [h["epoch"] for h in history]
        for ax, what in ((left, "loss"), (right, "accuracy")):
            ax.plot(epochs, [h[f"train_{what}"] for h in history], "-o", color=f"C{i}",
                    label=f"{model} train", markersize=4)
            ax.plot(epochs, [h[f"test_{what}"] for h in history], "--s", color=f"C{i}",
                    label=f"{model} test", markersize=4)
    left.set_ylabel("cross-entropy loss")
    right.set_ylabel("accuracy")
    right.set_ylim(-0.02, 1.02)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def plot_accuracy_and_drift(table, drift, path: str) -> str:
    """Accuracy (top) and attribution drift (bottom) against level, per corruption.

    Args:
        table: the sweep table (model, corruption, level, accuracy).
        drift: rows of (model, corruption, level, rank_correlation, ssim): mean
            similarity of the corrupted images' maps to the clean images' maps.
    """
    plt = _plt()
    names = list(dict.fromkeys(table["corruption"]))
    fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 6.4), squeeze=False,
                             sharex="col")
    for c, name in enumerate(names):
        top, bottom = axes[0, c], axes[1, c]
        for model, rows in table[table["corruption"] == name].groupby("model", sort=False):
            top.plot(rows["level"], rows["accuracy"], marker=".", label=model)
        for model, rows in drift[drift["corruption"] == name].groupby("model", sort=False):
            bottom.plot(rows["level"], rows["rank_correlation"], marker="o", label=model)
        top.set_title(name)
        top.set_ylabel("accuracy")
        top.set_ylim(-0.02, 1.02)
        bottom.set_ylabel("saliency rank correlation\nto the clean image's map")
        bottom.set_xlabel(_level_label(name))
        bottom.set_ylim(-0.05, 1.02)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def plot_prerendered(side, path: str, *, columns: int = 5) -> str:
    """Pre-rendered against on-the-fly accuracy per severity (`studies.corruption.
    compare_prerendered`'s table): one panel per corruption, per model a solid line
    (on the fly) and a dashed one (the files) in the same colour."""
    plt = _plt()
    names = list(dict.fromkeys(side["corruption"]))
    cols = min(columns, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        for i, (model, part) in enumerate(side[side["corruption"] == name].groupby(
                "model", sort=False)):
            ax.plot(part["severity"], part["on-the-fly accuracy"], marker=".", color=f"C{i}",
                    label=f"{model}, on the fly")
            ax.plot(part["severity"], part["pre-rendered accuracy"], marker="x", ls="--",
                    color=f"C{i}", label=f"{model}, pre-rendered")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("severity")
        ax.set_ylabel("accuracy")
        ax.set_xticks([1, 2, 3, 4, 5])
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, dpi=100)
