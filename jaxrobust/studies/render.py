"""`jaxrobust render`: a corrupted copy of a data source in a pre-rendered benchmark's
layout, for users who must evaluate on fixed files (`data.prerendered` reads it back).

* `cifar10c`: `<corruption>.npy` `(5 N, H, W, 3)` uint8 (severities 1..5 stacked) and
  `labels.npy` `(5 N,)`, the values truncated to 8 bits as the generator's `np.uint8`
  did;
* `imagenetc`: `<corruption>/<severity>/<class>/<image>.JPEG`, saved as the generators
  save (Pillow, quality 85, optimize).

Deterministic from the seed: image `i` of corruption `c` (its position in the list) at
severity `s` draws with `fold_in(fold_in(fold_in(stream(seed, "render"), c), i), s)`,
so the files do not depend on the chunking or the device count.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _io, _prng, _progress, corruptions
from jaxrobust.data import stream
from jaxrobust.data.prerendered import LAYOUTS, SEVERITIES
from jaxrobust.data.task import CHUNK, _corrupt_program, _in_chunks
from jaxrobust.sharding import local_mesh


def corrupted_u8(key: jax.Array, source, corruption: str, severity: int, *, table: str,
                 chunk: int = CHUNK):
    """Yields `(indices, uint8 images (B, H, W, 3), labels)` of `source` corrupted by
    `corruption` at benchmark `table`'s `severity`, `chunk` images at a time; gray
    images are repeated to RGB first (the benchmarks are RGB). Image `i` draws with
    `fold_in(fold_in(key, i), severity)`."""
    c = corruptions.get(corruption, table=table)
    program = _corrupt_program(c.apply, local_mesh(None))
    read = stream.checked_reader(source)
    for start in range(0, len(source), chunk):
        idx = np.arange(start, min(start + chunk, len(source)))
        images, labels = read(idx)
        x = stream.to_float(jnp.asarray(images))
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        level = corruptions.severity(corruption, severity, table=table, image_size=x.shape[1])
        keys = _prng.item_keys(key, jnp.asarray(idx), severity)
        out = _in_chunks(program, keys, x, jnp.full((len(idx),), level, jnp.float32))
        # np.uint8 of the generators' 0..255 floats truncates (1e-4: exact k / 255 stays k)
        u8 = np.floor(np.clip(np.asarray(out, np.float64), 0, 1) * 255 + 1e-4).astype(np.uint8)
        yield idx, u8, labels


def render(source, out_dir: str, *, layout: str, names, table: str = "imagenet",
           seed: int = 0, class_names=None, file_names=None,
           log: Callable[[str], None] = print, progress: bool | None = None) -> str:
    """Writes `source` corrupted by every corruption in `names` at severities 1..5 into
    `out_dir` (absent or empty) in `layout` (`cifar10c` or `imagenetc`); the folder
    appears only when every file is written (a failure leaves nothing).

    Args:
        source: clean images with labels (`data.stream.as_source`).
        names: corruptions (aliases allowed).
        table: the benchmark whose parameters the corruptions follow.
        seed: the PRNG seed (the same seed gives the same files).
        class_names: `imagenetc` class folder per label (default: the label, 4 digits).
        file_names: `imagenetc` file name per image, without extension (default: its
            index, 8 digits).

    Returns:
        `out_dir`.

    Raises:
        ValueError: unknown layout, corruption or table; a source without labels.
        FileExistsError: `out_dir` is not empty.
    """
    from PIL import Image

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use {' or '.join(LAYOUTS)}.")
    names = [corruptions.get(n).name for n in names]
    corruptions.tables.check(table)
    if not names:
        raise ValueError("render needs at least one corruption.")
    n = len(source)
    if source[np.arange(1)][1] is None:
        raise ValueError("render needs labelled images (the layouts store labels).")
    base = _prng.stream(seed, "render")
    bar = _progress.bar(total=len(names) * len(SEVERITIES) * n, desc="render", unit="img",
                        progress=progress)
    with _io.new_folder(out_dir) as tmp:
        labels_all = np.zeros(5 * n, np.int64)
        for c_index, name in enumerate(names):
            key = jax.random.fold_in(base, c_index)
            stack = None
            for s in SEVERITIES:
                for idx, u8, labels in corrupted_u8(key, source, name, s, table=table):
                    if layout == "cifar10c":
                        if stack is None:
                            stack = np.lib.format.open_memmap(
                                os.path.join(tmp, f"{name}.npy"), mode="w+", dtype=np.uint8,
                                shape=(5 * n, *u8.shape[1:]))
                        stack[(s - 1) * n + idx] = u8
                        labels_all[(s - 1) * n + idx] = labels
                    else:
                        for i, image, label in zip(idx, u8, labels, strict=True):
                            cls = (class_names[label] if class_names is not None
                                   else f"{int(label):04d}")
                            folder = os.path.join(tmp, name, str(s), cls)
                            os.makedirs(folder, exist_ok=True)
                            stem = file_names[i] if file_names is not None else f"{i:08d}"
                            Image.fromarray(image).save(os.path.join(folder, f"{stem}.JPEG"),
                                                        quality=85, optimize=True)
                    bar.update(len(idx))
            if stack is not None:
                stack.flush()
                del stack
        if layout == "cifar10c":
            dtype = np.uint8 if labels_all.max(initial=0) < 256 else np.int64
            np.save(os.path.join(tmp, "labels.npy"), labels_all.astype(dtype))
    bar.close()
    log(f"rendered {len(names)} corruptions x 5 severities x {n} images ({table} table) "
        f"into {out_dir} ({layout} layout)")
    return out_dir
