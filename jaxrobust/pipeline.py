"""The main job as a plain function, callable from Python and from the CLI.

Until the training and sweep stages exist, the main job is the corruption study's
kernel protocol on a built-in image: every corruption at every level of the study's
schedule, with SSIM and PSNR to the clean image, written as a CSV table, a plot and
a gallery.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import corruptions
from jaxrobust.metrics import psnr, ssim


def sample_image(size: int = corruptions.SEED_IMAGE_SIZE) -> np.ndarray:
    """scikit-image's bundled camera photograph, grayscale, `(size, size, 1)`, 8-bit-valued."""
    from skimage import data, transform

    image = transform.resize(data.camera(), (size, size), anti_aliasing=True)
    return (np.round(image * 255.0) / 255.0).astype(np.float32)[..., None]


def protocol_table(image: np.ndarray, *, key: jax.Array, log: Callable[[str], None] = print):
    """Applies every corruption at every seed level to `image`.

    Args:
        image: `(H, W, C)` float image in [0, 1].
        key: PRNG key for the random corruptions (split per corruption).
        log: progress sink.

    Returns:
        `(rows, corrupted)`: one dict per (corruption, step) with the level, SSIM and
        PSNR; and a dict name -> `(steps, H, W, C)` array of corrupted images.
    """
    rows, corrupted = [], {}
    image = jnp.asarray(image)
    size = min(image.shape[:2])
    for i, name in enumerate(corruptions.names()):
        c = corruptions.get(name)
        levels = jnp.asarray(corruptions.seed_levels(name, image_size=size))
        keys = jax.random.split(jax.random.fold_in(key, i), len(levels))
        start = time.perf_counter()
        out = jax.jit(jax.vmap(c.apply, in_axes=(0, None, 0)))(keys, image, levels)
        scores = jax.jit(jax.vmap(ssim, in_axes=(None, 0)))(image, out)
        peaks = jax.jit(jax.vmap(psnr, in_axes=(None, 0)))(image, out)
        out, scores, peaks = jax.device_get((out, scores, peaks))
        log(f"  {name:15s} {len(levels):3d} levels in {time.perf_counter() - start:5.1f} s")
        corrupted[name] = out
        for step, (level, s, p) in enumerate(zip(np.asarray(levels), scores, peaks, strict=True)):
            rows.append({"corruption": name, "label": c.label, "step": step,
                         "level": float(level), "ssim": float(s), "psnr": float(p)})
    return rows, corrupted


def _plot(rows, corrupted, image, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def run_kernel_demo(out_dir: str, *, seed: int = 0, log: Callable[[str], None] = print) -> str:
    """Runs the kernel protocol on the built-in image and writes its outputs.

    Writes `results.csv`, `ssim_vs_level.png` and `gallery.png` into `out_dir`; the
    files appear together (written to a temporary folder, then moved), so a failed run
    leaves nothing half-written.

    Returns:
        `out_dir`.
    """
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(
            f"output folder {out_dir} is not empty; pass another --out or remove it."
        )
    image = sample_image()
    log(f"jaxrobust kernel protocol on a {image.shape} image, devices: {jax.devices()}")
    rows, corrupted = protocol_table(image, key=jax.random.key(seed), log=log)
    tmp = tempfile.mkdtemp(prefix=".jaxrobust-", dir=parent)
    try:
        with open(os.path.join(tmp, "results.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _plot(rows, corrupted, image, tmp)
        if os.path.exists(out_dir):
            os.rmdir(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {len(rows)} rows to {os.path.join(out_dir, 'results.csv')}")
    return out_dir
