"""Attributions over a data source at data-set scale: streamed, resumable, split over
every local device and every process, as the sweep is (`store.run_cells`).

`integrated_gradients_source` reduces each image's IG map on device to a record (its
target, completeness error, total absolute attribution, and the map itself only when
asked); `attribution_drift_source` gives `attribution_drift`'s per-image scores for a
whole source. Both equal the in-memory functions on the same images (tested), and
their timing is the cost a user pays per image.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.attribution.checks import attribution_drift
from jaxrobust.attribution.gradients import integrated_gradients
from jaxrobust.data import stream
from jaxrobust.sharding import local_mesh, shard_batch, workers
from jaxrobust.store import FORMAT, SweepStore, _digest, run_cells

TARGETS = ("labels", "predicted")


def _targets(apply_fn, params, x, labels, targets: str):
    return labels if targets == "labels" else jnp.argmax(apply_fn(params, x), -1)


@functools.lru_cache(maxsize=32)
def _ig_program(apply_fn, steps, method, baseline, targets, keep_maps, mesh):
    def chunk(params, images, labels):
        x = stream.to_float(images)
        t = _targets(apply_fn, params, x, labels, targets).astype(jnp.int32)
        maps, delta = integrated_gradients(apply_fn, params, x, t, steps=steps, method=method,
                                           baseline=baseline, return_delta=True)
        out = {"target": t, "delta": delta, "abs_sum": jnp.abs(maps).sum((1, 2, 3))}
        return {**out, "maps": maps} if keep_maps else out

    return shard_batch(chunk, in_axes=(None, 0, 0), mesh=mesh)


@functools.lru_cache(maxsize=32)
def _drift_program(apply_fn, corruption, levels, method, steps, targets, mesh):
    def chunk(params, key, images, labels, idx):
        x = stream.to_float(images)
        t = _targets(apply_fn, params, x, labels, targets).astype(jnp.int32)
        out = attribution_drift(key, apply_fn, params, x, t, corruption=corruption,
                                levels=np.asarray(levels), steps=steps, method=method,
                                indices=idx)
        return {"target": t, "ssim": out["ssim"].T, "rank_correlation":
                out["rank_correlation"].T}

    return shard_batch(chunk, in_axes=(None, None, 0, 0, 0), mesh=mesh)


def _job(name, source, batch_size, devices, cells_dir, record, run, *, units, log, progress,
         wait_timeout, labelled):
    """Shared driver: checks, store, `run_cells`, assembly and timing."""
    source = stream.as_source(source)
    n = len(source)
    if n == 0:
        raise ValueError("no images to explain.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    mesh = local_mesh(devices)
    parts = workers(mesh)  # the devices, or on one CPU device the parts run at once
    checked = stream.checked_reader(source, labelled=labelled or None)

    def read(idx):  # unlabelled data explains its predictions: labels are placeholders
        images, labels = checked(idx)
        return images, (np.zeros(len(idx), np.int32) if labels is None else labels)

    read(np.arange(1))  # checked before any compute
    store = None
    if cells_dir is not None:
        store = SweepStore(cells_dir, {**record, "images": stream.source_digest(source)})
        store.fix_batch_size(name, batch_size)
        store.remember(name, batch_size)
    size = min(batch_size, -(-n // parts))
    start = time.perf_counter()
    cells = run_cells(name, n, size, parts, read, functools.partial(run, mesh, size), store=store,
                      units=units, desc=name, unit="img", wait_timeout=wait_timeout,
                      log=log, progress=progress)
    seconds = time.perf_counter() - start
    out = {k: np.concatenate([c[k] for c in cells]) for k in cells[0]}
    out["seconds"] = seconds
    return out


def _cut(res, sizes, size):
    res = jax.tree.map(np.asarray, res)
    return [{k: v[j * size:j * size + s] for k, v in res.items()} for j, s in enumerate(sizes)]


def integrated_gradients_source(apply_fn: Callable, params, source, *, targets: str = "labels",
                                steps: int = 50, method: str = "gausslegendre",
                                baseline: str = "black", batch_size: int = 8,
                                keep_maps: bool = False, cells_dir: str | None = None,
                                devices: int | None = None, wait_timeout: float = 3600.0,
                                log: Callable[[str], None] = print,
                                progress: bool | None = None) -> dict:
    """Integrated Gradients for every image of a data source, a chunk at a time.

    Args:
        apply_fn, params: the classifier, `apply_fn(params, (B, H, W, C)) -> (B, K)`.
        source: an `(N, H, W, C)` array or a data source (`data.stream.as_source`): uint8 or
            float images in [0, 1], read `batch_size x devices` at a time (on one
            CPU device, `batch_size x cores`: `sharding.workers`).
        targets: `labels` (the source's) or `predicted` (the model's on the clean image).
        steps, method, baseline: as `integrated_gradients` (a baseline kind).
        batch_size: images per device and chunk (IG's memory is `steps`-chunked inside).
        keep_maps: also return the maps `(N, H, W, C)` (memory and cells grow with N);
            off, only the per-image records are kept.
        cells_dir: finished chunks saved there (a rerun resumes; several processes
            share it, each explaining its block of images).
        devices: local devices to split each chunk over (default all).

    Returns:
        `{"target": (N,), "delta": (N,) completeness error sum(IG) - (F(x) - F(b)),
        "abs_sum": (N,) total |IG|, ["maps"], "seconds": this call's time}`; the
        records equal `integrated_gradients(..., return_delta=True)` on the same
        images (tested).
    """
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}.")

    def run(mesh, size, idx, rows, images, labels, sizes):
        program = _ig_program(apply_fn, steps, method, baseline, targets, keep_maps, mesh)
        return _cut(program(params, images[rows], labels[rows]), sizes, size)

    record = {"format": FORMAT, "job": "ig", "steps": steps, "method": method,
              "baseline": baseline, "targets": targets, "keep_maps": keep_maps,
              "models": _digest(*jax.tree.leaves(params))}
    return _job("ig", source, batch_size, devices, cells_dir, record, run, units=1,
                log=log, progress=progress, wait_timeout=wait_timeout,
                labelled=targets == "labels")


def attribution_drift_source(key, apply_fn: Callable, params, source, *, corruption: str,
                             levels: Sequence[float], method: str = "saliency",
                             steps: int = 32, targets: str = "labels", batch_size: int = 8,
                             cells_dir: str | None = None, devices: int | None = None,
                             wait_timeout: float = 3600.0,
                             log: Callable[[str], None] = print,
                             progress: bool | None = None) -> dict:
    """`attribution_drift` for every image of a data source, a chunk at a time.

    Image `i` draws its corruption with the key `attribution_drift` gives it in one
    call over the whole set, so the scores equal that call's (tested) whatever the
    chunking, device or process count. Arguments as `integrated_gradients_source` and
    `attribution_drift`.

    Returns:
        `{"levels": (L,), "target": (N,), "ssim": (L, N), "rank_correlation": (L, N),
        "seconds"}`.
    """
    from jaxrobust import corruptions

    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}.")
    if method not in ("saliency", "ig"):
        raise ValueError(f"method must be saliency or ig, got {method!r}.")
    name = corruptions.get(corruption).name
    levels = tuple(float(v) for v in levels)

    def run(mesh, size, idx, rows, images, labels, sizes):
        program = _drift_program(apply_fn, name, levels, method, steps, targets, mesh)
        return _cut(program(params, key, images[rows], labels[rows],
                            idx[rows].astype(np.int32)), sizes, size)

    record = {"format": FORMAT, "job": "drift", "corruption": name, "levels": list(levels),
              "method": method, "steps": steps, "targets": targets,
              "key": _digest(jax.random.key_data(key)),
              "models": _digest(*jax.tree.leaves(params))}
    out = _job(f"drift_{name}", source, batch_size, devices, cells_dir, record, run,
               units=len(levels), log=log, progress=progress, wait_timeout=wait_timeout,
               labelled=targets == "labels")
    out["ssim"], out["rank_correlation"] = out["ssim"].T, out["rank_correlation"].T
    out["levels"] = np.asarray(levels, np.float32)
    return out
