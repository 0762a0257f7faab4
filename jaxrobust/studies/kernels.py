"""The kernel protocol and the corruption gallery: corruptions alone, no model.

`run_kernel_demo` applies the study's three corruptions at every step of its schedule
to a bundled photograph and writes the table and figures; `corruption_gallery` draws
one image under every corruption at every severity; `protocol_comparison` is the
table of docs/study.md (both protocols side by side).
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _io, _progress, corruptions
from jaxrobust.metrics import psnr, ssim


def protocol_table(key: jax.Array, image: np.ndarray, *, log: Callable[[str], None] = print):
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
    for i, name in enumerate(corruptions.names("study")):
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


def protocol_comparison(key: jax.Array, images: np.ndarray):
    """Both protocols of the study's three corruptions, step by step, on `images`.

    For every one of the study's 120 steps: the level `protocol="study"` uses (what
    the study's float64 loop computed), the level `continuous` uses, and the mean SSIM
    of the corrupted images to the clean ones each way (study: SSIM range 2, as its
    code took; continuous: range 1). The table of docs/study.md.

    Args:
        images: `(N, H, W, C)` float images in [0, 1] (square; levels for side H).
        key: PRNG key for the noise (the same draws under both protocols).

    Returns:
        A DataFrame with columns corruption, step, study_level, continuous_level,
        study_ssim, continuous_ssim.
    """
    import pandas as pd

    images = jnp.asarray(images)
    size = images.shape[1]
    rows = []
    for i, name in enumerate(corruptions.names("study")):
        c = corruptions.get(name)
        both = {}
        for protocol, data_range in corruptions.SSIM_DATA_RANGE.items():
            levels = corruptions.seed_levels(name, image_size=size, protocol=protocol)
            encoded = jnp.asarray(corruptions.kernel_levels(name, levels))
            keys = jax.random.split(jax.random.fold_in(key, i), (len(levels), len(images)))

            def step(k, level, data_range=data_range, c=c):
                out = jax.vmap(c.apply, in_axes=(0, 0, None))(k, images, level)
                return jnp.mean(jax.vmap(lambda a, b: ssim(a, b, data_range=data_range))(
                    images, out))

            scores = jax.jit(lambda k, lv, step=step: jax.lax.map(
                lambda a: step(*a), (k, lv)))(keys, encoded)
            both[protocol] = (levels, np.asarray(scores))
        for s in range(len(both["study"][0])):
            rows.append({"corruption": name, "step": s,
                         "study_level": float(both["study"][0][s]),
                         "continuous_level": float(both["continuous"][0][s]),
                         "study_ssim": float(both["study"][1][s]),
                         "continuous_ssim": float(both["continuous"][1][s])})
    return pd.DataFrame(rows)


def corruption_gallery(source: str, out_png: str, *, names=None,
                       severities=(1, 2, 3, 4, 5), size: int = 224, seed: int = 0,
                       progress: bool | None = None) -> str:
    """Writes a PNG grid of `source` under every corruption (rows) at every severity
    (columns), each corruption one compiled call vmapped over the severities.

    Args:
        source: image file, or `sample` for scikit-image's astronaut.
        out_png: the PNG to write (written whole or not at all).
        names: corruptions (default: every corruption with a severity table).
        severities: ImageNet-C severities, may be fractional, in [0, 5].
        size: side of the square the image is resized and cropped to.
        seed: PRNG seed of the random corruptions.
        progress: a bar over the corruptions (True / False / None: process default).

    Returns:
        `out_png`.
    """
    from jaxrobust.data.sources import gallery_image
    from jaxrobust.report import plot_gallery

    if not out_png.lower().endswith(".png"):
        raise ValueError(f"gallery output {out_png} must be a .png file.")
    names = [corruptions.get(n).name for n in (names or [
        n for n in corruptions.names() if corruptions.get(n).severities is not None])]
    severities = np.asarray(severities, np.float32)
    levels = {n: corruptions.severity(n, severities, image_size=size) for n in names}
    image = gallery_image(source, size)
    keys = jax.random.split(jax.random.key(seed), len(names))
    panels = []
    bar = _progress.bar(names, desc="gallery", unit="corruption", progress=progress)
    for i, name in enumerate(bar):
        bar.set_postfix_str(name)
        fn = jax.jit(jax.vmap(corruptions.get(name).apply, in_axes=(None, None, 0)))
        panels.append(np.asarray(fn(keys[i], jnp.asarray(image), jnp.asarray(levels[name]))))
    with _io.atomic_path(out_png) as tmp:
        plot_gallery(image, np.stack(panels), names, severities.tolist(), tmp,
                     suptitle=f"jaxrobust corruptions ({size} x {size}, seed {seed})")
    return out_png


def run_kernel_demo(out_dir: str, *, seed: int = 0, log: Callable[[str], None] = print) -> str:
    """Runs the kernel protocol on the built-in image and writes its outputs.

    Writes `results.csv`, `ssim_vs_level.png` and `gallery.png` into `out_dir`; the
    files appear together (written to a temporary folder, then moved), so a failed run
    leaves nothing half-written.

    Returns:
        `out_dir`.
    """
    from jaxrobust.data.sources import sample_image
    from jaxrobust.report import plot_kernel_protocol

    out_dir = os.path.abspath(out_dir)
    with _io.new_folder(out_dir) as tmp:
        image = sample_image()
        log(f"jaxrobust kernel protocol on a {image.shape} image, devices: {jax.devices()}")
        rows, corrupted = protocol_table(jax.random.key(seed), image, log=log)
        with open(os.path.join(tmp, "results.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot_kernel_protocol(rows, corrupted, tmp)
    log(f"wrote {len(rows)} rows to {os.path.join(out_dir, 'results.csv')}")
    return out_dir
