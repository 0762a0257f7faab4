"""Matplotlib figures of a sweep table (one PNG each)."""

from __future__ import annotations

import os

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    fig.suptitle("Accuracy against corruption level (shaded: 95% bootstrap interval)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy_vs_ssim(table, path: str, critical: dict | None = None) -> str:
    """Accuracy against mean SSIM to the clean image, one line per (model, corruption).

    `critical`: `(model, corruption) -> (ssim, accuracy)` points marked with a cross
    (the critical SSIM and the threshold accuracy it is defined by).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = ["-", "--", ":", "-."]
    for i, (model, rows) in enumerate(table.groupby("model", sort=False)):
        for name, r in rows.groupby("corruption", sort=False):
            order = np.argsort(r["ssim_mean"].to_numpy())
            (line,) = ax.plot(r["ssim_mean"].to_numpy()[order], r["accuracy"].to_numpy()[order],
                              styles[i % len(styles)], marker=".", label=f"{model} / {name}")
            if critical and (model, name) in critical:
                ax.plot(*critical[model, name], "x", color=line.get_color(), markersize=9)
    ax.set_xlabel("mean SSIM to the clean image")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Accuracy against structural similarity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(per_image: dict, class_names: dict, path: str) -> str:
    """Predicted classes of the corrupted images: one matrix per (model, corruption).

    Rows are the sweep steps (levels, low to high), columns the predicted classes;
    each cell is the fraction of images.
    """
    plt = _plt()
    keys = sorted(k for k in per_image if k.endswith("/pred") and not k.startswith("clean/"))
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
            im = ax.imshow(frac, aspect="auto", vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks(range(len(classes)))
            ax.set_xticklabels(classes, rotation=35, ha="right", fontsize=7)
            ax.set_ylabel("sweep step", fontsize=8)
            ax.yaxis.get_major_locator().set_params(integer=True)
            ax.set_title(f"{m}: {name}", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="fraction predicted")
    fig.suptitle("Predicted class of the corrupted test images at each step", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _save_rows(fig, plt, path: str, suptitle: str, row_height: float, rows: int) -> str:
    """Title, layout (room for the title above `rows` rows), save, close."""
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (row_height * rows)))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_attribution_panels(images, maps, titles, path: str, *, suptitle: str = "",
                            method: str = "saliency") -> str:
    """Rows of image | attribution heat map | overlay, as in the study's figures 35-38.

    Args:
        images: `(N, H, W, C)` images in [0, 1].
        maps: `(N, H, W, C)` attributions (the channel magnitude is summed).
        titles: one caption per row.
        method: the attribution's name, the heat-map column's title.
    """
    plt = _plt()
    images, maps = np.asarray(images), np.abs(np.asarray(maps)).sum(-1)
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n), squeeze=False)
    for i in range(n):
        shown = images[i][..., 0] if images.shape[-1] == 1 else images[i]
        heat = maps[i] / max(maps[i].max(), 1e-12)
        axes[i, 0].imshow(shown, cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(titles[i], fontsize=7)
        axes[i, 1].imshow(heat, cmap="inferno", vmin=0, vmax=1)
        axes[i, 1].set_title(method, fontsize=7)
        axes[i, 2].imshow(shown, cmap="gray", vmin=0, vmax=1)
        axes[i, 2].imshow(heat, cmap="inferno", alpha=0.5, vmin=0, vmax=1)
        axes[i, 2].set_title("overlay", fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    return _save_rows(fig, plt, path, suptitle, 2.2, n)


def plot_edit_panels(images, attributions, masks, edited, titles, path: str, *,
                     suptitle: str = "") -> str:
    """Rows of original | attribution | edit mask | edited (the attribution study).

    Args:
        images, edited: `(N, H, W, C)` in [0, 1].
        attributions: `(N, H, W, C)` signed maps (red positive, blue negative), or
            None for edits without one (random flips).
        masks: `(N, H, W)` bool, the edited pixels.
        titles: `(N,)` pairs `(left caption, right caption)`: typically the original
            and the edited image's predictions.
    """
    plt = _plt()
    images, edited, masks = np.asarray(images), np.asarray(edited), np.asarray(masks)
    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(7.2, 1.95 * n), squeeze=False)
    gray = lambda x: x[..., 0] if x.shape[-1] == 1 else x
    for i in range(n):
        axes[i, 0].imshow(gray(images[i]), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(titles[i][0], fontsize=7)
        if attributions is not None:
            a = np.asarray(attributions[i]).sum(-1)
            scale = max(float(np.abs(a).max()), 1e-12)
            axes[i, 1].imshow(a, cmap="bwr", vmin=-scale, vmax=scale)
            axes[i, 1].set_title("attribution (red +, blue -)", fontsize=7)
        else:
            axes[i, 1].set_title("no attribution", fontsize=7)
        axes[i, 2].imshow(masks[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 2].set_title(f"edited pixels: {int(masks[i].sum())}", fontsize=7)
        axes[i, 3].imshow(gray(edited[i]), cmap="gray", vmin=0, vmax=1)
        axes[i, 3].set_title(titles[i][1], fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    return _save_rows(fig, plt, path, suptitle, 1.95, n)


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
    fig.suptitle("Accuracy and attribution drift against corruption level", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gallery(image, panels, names, severities, path: str, *, suptitle: str = "") -> str:
    """A grid of corrupted images: one row per corruption, one column per severity.

    Args:
        image: the clean `(H, W, C)` image, shown in the first column.
        panels: `(len(names), len(severities), H, W, C)` corrupted images.
        names: row labels (corruption names).
        severities: column labels.
    """
    plt = _plt()
    rows, cols = len(names), len(severities) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.5 * rows), squeeze=False)
    gray = image.shape[-1] == 1
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r, c]
            shown = image if c == 0 else panels[r, c - 1]
            ax.imshow(np.clip(shown[..., 0] if gray else shown, 0, 1),
                      cmap="gray" if gray else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {severities[c - 1]:g}",
                             fontsize=8)
        axes[r, 0].set_ylabel(name.replace("_", " "), fontsize=8)
    return _save_rows(fig, plt, path, suptitle, 1.5, rows)


def plot_kernel_protocol(rows, corrupted, out_dir: str) -> list[str]:
    """The kernel protocol's two figures in `out_dir`: SSIM against level per corruption
    (`ssim_vs_level.png`), and six steps of each corruption (`gallery.png`).

    Args:
        rows: dicts with corruption, level and ssim, one per (corruption, step).
        corrupted: name -> `(steps, H, W, C)` corrupted images.

    Returns:
        The two paths.
    """
    from jaxrobust import corruptions

    plt = _plt()

    names = list(corrupted)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4))
    for ax, name in zip(axes, names, strict=True):
        sel = [r for r in rows if r["corruption"] == name]
        ax.plot([r["level"] for r in sel], [r["ssim"] for r in sel], marker=".")
        ax.set_xlabel(corruptions.get(name).level_meaning.split(",")[0], fontsize=8)
        ax.set_ylabel("SSIM to the clean image")
        ax.set_title(f"{name} ({corruptions.get(name).label})")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "ssim_vs_level.png"), dpi=110)
    plt.close(fig)

    cols = 6
    fig, axes = plt.subplots(len(names), cols, figsize=(1.9 * cols, 2.1 * len(names)))
    for r, name in enumerate(names):
        stack = corrupted[name]
        picks = np.linspace(0, len(stack) - 1, cols).round().astype(int)
        sel = [row for row in rows if row["corruption"] == name]
        for c, step in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(stack[step][..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{name}\nlevel {sel[step]['level']:.3g}, SSIM {sel[step]['ssim']:.2f}",
                         fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "gallery.png"), dpi=110)
    plt.close(fig)
    return [os.path.join(out_dir, "ssim_vs_level.png"), os.path.join(out_dir, "gallery.png")]
