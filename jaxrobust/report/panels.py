"""Figures of images: attribution panels and grids, edit panels, the corruption gallery
and the kernel protocol's strip (one PNG each)."""

from __future__ import annotations

import os

import numpy as np

from jaxrobust.report.plots import _plt, _save


def _save_rows(fig, plt, path: str, suptitle: str, row_height: float, rows: int) -> str:
    """Title, layout (room for the title above `rows` rows), save, close."""
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (row_height * rows)))
    return _save(fig, path, dpi=100)


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
                     suptitle: str = "", per_row: int = 2) -> str:
    """Examples of original | attribution | edit mask | edited (the attribution study),
    `per_row` examples side by side, filling the page's width.

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
    rows = -(-n // per_row)
    row_height = 14.0 / (4 * per_row) + 0.45
    fig, axes = plt.subplots(rows, 4 * per_row, figsize=(14.0, row_height * rows + 0.4),
                             squeeze=False)
    gray = lambda x: x[..., 0] if x.shape[-1] == 1 else x
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, per_row)
        ax = axes[r, 4 * c:4 * c + 4]
        ax[0].imshow(gray(images[i]), cmap="gray", vmin=0, vmax=1)
        ax[0].set_title(titles[i][0], fontsize=9)
        if attributions is not None:
            a = np.asarray(attributions[i]).sum(-1)
            scale = max(float(np.abs(a).max()), 1e-12)
            ax[1].imshow(a, cmap="bwr", vmin=-scale, vmax=scale)
            ax[1].set_title("attribution (red +, blue -)", fontsize=9)
        else:
            ax[1].set_title("no attribution", fontsize=9)
        ax[2].imshow(masks[i], cmap="gray", vmin=0, vmax=1)
        ax[2].set_title(f"edited pixels: {int(masks[i].sum())}", fontsize=9)
        ax[3].imshow(gray(edited[i]), cmap="gray", vmin=0, vmax=1)
        ax[3].set_title(titles[i][1], fontsize=9)
    return _save_rows(fig, plt, path, suptitle, row_height, rows)


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
    _save(fig, os.path.join(out_dir, "ssim_vs_level.png"), dpi=110)

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
    _save(fig, os.path.join(out_dir, "gallery.png"), dpi=110)
    return [os.path.join(out_dir, "ssim_vs_level.png"), os.path.join(out_dir, "gallery.png")]


def plot_saliency_grid(images, maps, captions, path: str, *, columns: int = 3,
                       method: str = "saliency") -> str:
    """A grid of examples filling the width: each is the image and its attribution
    heat map side by side, under one caption; one colorbar for every map.

    Args:
        images: `(N, H, W, C)` images in [0, 1].
        maps: `(N, H, W, C)` attributions; the channel-summed magnitude is shown,
            scaled to [0, 1] per image (so the colorbar is shared).
        captions: one line per example (class, prediction, level, SSIM).
        columns: examples per row.
        method: the attribution's name, on the colorbar.
    """
    plt = _plt()
    images, maps = np.asarray(images), np.abs(np.asarray(maps)).sum(-1)
    n = len(images)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(14.0, 14.0 / (2 * columns) * rows
                                                         + 0.6 * rows + 0.4),
                             squeeze=False, layout="constrained")
    im = None
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, columns)
        shown = images[i][..., 0] if images.shape[-1] == 1 else images[i]
        heat = maps[i] / max(float(maps[i].max()), 1e-12)
        left, right = axes[r, 2 * c], axes[r, 2 * c + 1]
        left.imshow(shown, cmap="gray", vmin=0, vmax=1)
        im = right.imshow(heat, cmap="inferno", vmin=0, vmax=1)
        left.set_title(captions[i], fontsize=11, loc="left")  # legible on a 900 px page
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label=f"{method} (|map| / its maximum)")
    return _save(fig, path, dpi=100)
