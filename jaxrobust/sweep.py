"""The intensity-sweep engine: corrupt -> SSIM -> predict, for every level at once.

For each corruption one compiled program takes a chunk of clean images and every
level of the schedule: `lax.map` walks the levels (bounding memory), `vmap` covers
the chunk's images, and the chunk is split over every local device. A level that
leaves the images unchanged (a corruption's identity level: crop 0, sigma 0, ...) costs
no model pass: the clean images' logits, computed once per chunk, stand in. The program is
kept (per kernel, models and mesh), so a later sweep with the same models and chunk
shape does not compile it again; a chunk is never larger than the data. Random keys are
per (corruption, image index, step), so results do not depend on the chunk size or
the device count.

Three layers: `engine` runs the compiled programs and returns arrays (SSIM and every
model's probabilities per image and level, and the chunk size it used); `to_table`
turns them into the per-level table and per-image arrays; `run` checks the inputs,
chooses the expected classes and composes the two. With a `cells_dir`, finished
(corruption, chunk) cells go to a `jaxrobust.store.SweepStore` there, so a rerun
resumes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _prng, _progress
from jaxrobust import corruptions as registry
from jaxrobust.data import stream
from jaxrobust.metrics import ssim_compare, ssim_reference
from jaxrobust.sharding import available_bytes, local_mesh, pad_leading, shard_batch, workers
from jaxrobust.store import SweepStore, fingerprint, run_cells

TARGETS = ("corruption_type", "labels")
_COMPILED: set = set()  # (program, shapes) already run in this process
#: Host memory the clean images' logits may take to be kept for every corruption of a
#: sweep (`_CleanLogits`); above it, only the first corruption reuses them.
CLEAN_LOGITS_BYTES = 256 * 2**20


def _check(classifiers, corruptions, target, protocol):
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}.")
    if protocol not in registry.PROTOCOLS:
        raise ValueError(f"protocol must be one of {registry.PROTOCOLS}, got {protocol!r}.")
    if not classifiers:
        raise ValueError("no classifiers to sweep.")
    return [registry.get(c).name for c in corruptions]


def _schedule(names, levels, shape, protocol, table=registry.tables.DEFAULT):
    schedule = {}
    for name in names:
        corruption = registry.get(name, table=table)
        lv = np.asarray(levels[name] if levels and name in levels else
                        registry.seed_levels(name, image_size=shape[0], protocol=protocol,
                                             table=table), np.float64)
        low = corruption.min_level
        top = corruption.max_level(shape[0], shape[1])
        if lv.ndim != 1 or len(lv) == 0 or lv.min() < low or lv.max() > top:
            raise ValueError(f"levels for {name} must be a non-empty list in [{low:g}, {top:g}] "
                             f"({corruption.level_meaning}); got {lv.tolist()[:5]}...")
        schedule[name] = lv
    return schedule


def auto_batch_size(program, consts, sample, expected, levels, *, devices: int, n: int,
                    fraction: float = 0.25, budget_bytes: float | None = None,
                    largest: int = 512, extra: Callable[[int], tuple] | None = None) -> int:
    """Images per chunk so that one chunk's program fits `fraction` of free memory.

    Compiles the chunk program for a probe chunk of `8 x devices` images (`sample`, its
    rows repeated as needed, `expected` likewise; `extra(probe)` gives the program's
    further arguments, if any), reads XLA's own memory analysis (temporaries,
    arguments, outputs) and scales it linearly; at most `n` (the images).
    """
    probe = 8 * devices
    idx = np.arange(probe, dtype=np.int32)
    sample = np.resize(sample, (probe,) + sample.shape[1:])
    expected = np.resize(expected, (probe,) + expected.shape[1:])
    more = () if extra is None else extra(probe)
    stats = program.lower(consts, idx, sample, expected, levels,
                          *more).compile().memory_analysis()
    used = 0.0 if stats is None else float(stats.temp_size_in_bytes
                                           + stats.argument_size_in_bytes
                                           + stats.output_size_in_bytes)
    budget = fraction * available_bytes() if budget_bytes is None else budget_bytes
    per_image = max(used / probe, 1.0)
    size = int(budget // per_image) // devices * devices
    return int(min(max(size, devices), largest, max(n, 1)))


def _records(logits, expected, top_k: tuple[int, ...], keep_probs: bool) -> dict:
    """One model's record per image at one level, from its logits `(B, K)` and the
    expected classes `(B,)`: prediction, correctness, top-k correctness (the true
    class's rank < k), the true class's and the top probability, cross-entropy loss,
    and the probabilities when `keep_probs`."""
    logp = jax.nn.log_softmax(logits, -1)
    true = jnp.take_along_axis(logp, expected[:, None], -1)[:, 0]
    pred = jnp.argmax(logits, -1).astype(jnp.int32)
    out = {"pred": pred, "correct": pred == expected, "true_prob": jnp.exp(true),
           "confidence": jnp.exp(jnp.max(logp, -1)), "loss": -true}
    if any(k > 1 for k in top_k):
        rank = jnp.sum(logits > jnp.take_along_axis(logits, expected[:, None], -1), -1)
        out.update({f"top{k}": rank < k for k in top_k if k > 1})
    if keep_probs:
        out["probs"] = jnp.exp(logp)
    return out


@functools.lru_cache(maxsize=64)
def _chunk_program(kernel: Callable, fns: tuple[Callable, ...], mesh, data_range: float = 1.0,
                   top_k: tuple[int, ...] = (1,), keep_probs: bool = False,
                   reuse_clean: bool = False):
    """The compiled sweep of one corruption: `((params, key, original (M,), limit),
    idx (B,), clean (B, H, W, C) uint8 or float, expected (B, M), levels (L, ...)
    [, identity (L,) bool, clean logits (B, K_m) per model]) -> (ssim (B, L), records per
    model ({field: (B, L)}))`.

    `params` has one entry per model, `key` is the corruption's base key; `levels` as
    `corruptions.kernel_levels` encodes them; SSIM with range `data_range`. An image
    whose SSIM is above `limit` is expected to be `original[m]` (the study's limit
    value; `inf` for none). Everything is reduced on device: no probability vector
    leaves it unless `keep_probs`.

    `reuse_clean`: `identity` marks the corruption's identity level(s), and every
    model's logits on the clean images (`_clean_program`'s) come along. Where the kernel
    at such a level returned the chunk's images unchanged, bit for bit, that level's
    records come from those logits (a `lax.cond`: the models do not run); otherwise,
    and at every other level, the models run on the corrupted images as usual.

    Built once per (kernel, models, mesh, options) and kept, so that a second sweep
    with the same kernel, models and chunk shape (other images, another key, a
    benchmark's second run) reuses the compiled program instead of compiling it again.
    """

    def chunk(consts, idx, clean, expected, levels, *reuse):
        params, base, original, limit = consts
        clean = stream.to_float(clean)
        reference = jax.vmap(ssim_reference)(clean)  # the clean images' half of SSIM, once
        identity, clean_logits = (reuse[0], reuse[1:]) if reuse_clean else (None, None)

        def one_level(xs):
            step, level = xs[:2]
            keys = _prng.item_keys(base, idx, step)
            bad = jax.vmap(kernel, in_axes=(0, 0, None))(keys, clean, level)
            scores = jax.vmap(lambda r, b: ssim_compare(r, b, data_range=data_range))(
                reference, bad)
            if reuse_clean:  # the pixels compared at the identity level only
                same = jax.lax.cond(xs[2], _unchanged, lambda b, c: jnp.bool_(False),
                                    bad, clean)
            records = []
            for m, (f, p) in enumerate(zip(fns, params, strict=True)):
                if reuse_clean:  # the kernel stays once in the program: a cond per level
                    logits = jax.lax.cond(same, lambda p, b, c: c,
                                          lambda p, b, c, f=f: f(p, b), p, bad,
                                          clean_logits[m])
                else:
                    logits = f(p, bad)
                records.append(_records(logits, jnp.where(scores > limit, original[m],
                                                          expected[:, m]), top_k, keep_probs))
            return scores, tuple(records)

        xs = (jnp.arange(levels.shape[0]), levels) + ((identity,) if reuse_clean else ())
        scores, records = jax.lax.map(one_level, xs)
        # batch axis first for the device split: (B, L), (B, L[, K])
        return (jnp.swapaxes(scores, 0, 1), jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1),
                                                         records))

    in_axes = (None, 0, 0, 0, None) + ((None,) + (0,) * len(fns) if reuse_clean else ())
    return shard_batch(chunk, in_axes=in_axes, mesh=mesh)


def _unchanged(bad, clean) -> jax.Array:
    """Whether `bad` equals `clean` bit for bit (a scalar bool; False where their shapes
    or dtypes differ)."""
    if bad.shape != clean.shape or bad.dtype != clean.dtype:
        return jnp.bool_(False)
    as_bits = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[bad.dtype.itemsize]
    return jnp.all(jax.lax.bitcast_convert_type(bad, as_bits)
                   == jax.lax.bitcast_convert_type(clean, as_bits))


@functools.lru_cache(maxsize=16)
def _clean_program(fns: tuple[Callable, ...], mesh):
    """The models on the clean images: `(params, clean (B, H, W, C) uint8 or float) ->
    (logits (B, K_m) per model, predictions (B, M) int32)`, split as the sweep's chunk
    program splits a chunk (so each chunk's part meets the same computation)."""

    def clean_pass(params, clean):
        clean = stream.to_float(clean)
        logits = tuple(f(p, clean) for f, p in zip(fns, params, strict=True))
        preds = jnp.stack([jnp.argmax(x, -1).astype(jnp.int32) for x in logits], -1)
        return logits, preds

    return shard_batch(clean_pass, in_axes=(None, 0), mesh=mesh)


def _identity_steps(name: str, table: str, levels: np.ndarray) -> np.ndarray:
    """`(L,)` bool: which of the encoded `levels` (`corruptions.kernel_levels`) is the
    corruption's `identity_level` (a candidate: the sweep still checks the pixels)."""
    corruption = registry.get(name, table=table)
    ident = np.asarray(registry.kernel_levels(name, [corruption.identity_level]))[0]
    levels = np.asarray(levels)
    if levels.shape[1:] != ident.shape:
        return np.zeros(len(levels), bool)
    return np.all(levels.reshape(len(levels), -1) == ident.reshape(1, -1), axis=1)


class _CleanLogits:
    """Every model's logits on the clean images, per image, computed once per chunk
    shape (`_clean_program`) and, with `keep`, kept for the sweep's later corruptions:
    an image's logits come from the same part of the same program whatever corruption
    asks, so the results do not depend on which one computed them (or on what a
    resumed run had left to compute)."""

    def __init__(self, program, params, n: int, keep: bool):
        self.program, self.params, self.n, self.keep = program, params, n, keep
        self.size, self.logits, self.preds, self.have = None, None, None, None

    def __call__(self, size: int, idx, rows, images, sizes):
        """`(logits per model (B, K_m), predictions (B, M))` for the batch `images[rows]`
        of images `idx[rows]` (`run_cells`' batch of cells of `size`)."""
        ids = idx[rows]
        if self.size == size and self.have[ids].all():
            return tuple(x[ids] for x in self.logits), self.preds[ids]
        logits, preds = jax.tree.map(np.asarray, self.program(self.params, images[rows]))
        if self.keep:
            if self.size != size:  # one chunk shape kept at a time
                self.size, self.have = size, np.zeros(self.n, bool)
                self.logits = tuple(np.zeros((self.n,) + x.shape[1:], x.dtype) for x in logits)
                self.preds = np.zeros((self.n, preds.shape[-1]), preds.dtype)
            real = np.concatenate([np.arange(j * size, j * size + k)
                                   for j, k in enumerate(sizes)])  # not the padding
            for keep, x in zip(self.logits, logits, strict=True):
                keep[ids[real]] = x[real]
            self.preds[ids[real]] = preds[real]
            self.have[ids[real]] = True
        return logits, preds


def _reads_key(kernel: Callable, image: jax.ShapeDtypeStruct, level) -> bool:
    """Whether `kernel(key, image, level)`'s traced program reads its key at all."""
    jaxpr = jax.make_jaxpr(kernel)(jax.random.key(0), image, level).jaxpr
    key = jaxpr.invars[0]
    return any(v is key for v in jaxpr.outvars) or any(
        v is key for eqn in jaxpr.eqns for v in eqn.invars)


def _distinct_levels(kernel: Callable, image: jax.ShapeDtypeStruct, levels: np.ndarray):
    """The levels a sweep has to compute: `(levels[keep], inverse)`, `inverse (L,)`
    mapping every level to its computed one (None: all of them are computed).

    A kernel that never reads its key (`scale_up`, the median, JPEG, ...) gives the
    same image for two levels that encode the same (`levels` as
    `corruptions.kernel_levels` gives them, `(L, ...)`): the study protocol's 50 crop
    steps are 23 whole-pixel widths, small images round several median radii to the
    same disk. Such a level is computed once and its records are copied, which gives
    the same results bit for bit. A random kernel draws anew at every step (its key
    depends on the step), so it keeps every level.
    """
    flat = levels.reshape(len(levels), -1)
    _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    if len(first) == len(levels) or _reads_key(kernel, image, levels[0]):
        return levels, None
    order = np.argsort(first)  # the computed levels keep the schedule's order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return levels[first[order]], rank[inverse.reshape(-1)]


@functools.lru_cache(maxsize=16)
def _predict_program(fn: Callable):
    return jax.jit(lambda params, x: jnp.argmax(fn(params, x), -1))


def clean_predictions(fn: Callable, params, images, *, batch: int = 64) -> np.ndarray:
    """`argmax fn(params, images)` over the clean images, `batch` at a time: `(N,)` int32."""
    program = _predict_program(fn)
    out = []
    for s in range(0, len(images), batch):
        part = images[s:s + batch]
        pred = program(params, pad_leading(jnp.asarray(part), batch))
        out.append(np.asarray(pred)[:len(part)])
    return np.concatenate(out).astype(np.int32)


def prerendered_accuracy(classifiers: Mapping[str, tuple[Callable, object]], sources, *,
                         batch: int = 64, progress: bool | None = None):
    """Every classifier's accuracy on pre-rendered corrupted images.

    Args:
        classifiers: name -> `(apply_fn, params)`.
        sources: `(corruption, severity) -> source` (e.g. `data.prerendered`'s): images
            with labels, read `batch` at a time.
        batch: images per call.
        progress: a bar over the sets.

    Returns:
        A DataFrame with one row per (model, corruption, severity): n, accuracy.

    Raises:
        ValueError: a source without labels, or with bad images (`check_chunk`).
    """
    import pandas as pd

    rows = []
    bar = _progress.bar(list(sources), desc="pre-rendered", unit="set", progress=progress)
    for corruption, severity in bar:
        source = sources[corruption, severity]
        read = stream.checked_reader(source, labelled=True)
        correct = {m: 0 for m in classifiers}
        for start in range(0, len(source), batch):
            idx = np.arange(start, min(start + batch, len(source)))
            images, labels = read(idx)
            x = stream.to_float(jnp.asarray(images))
            for m, (fn, params) in classifiers.items():
                correct[m] += int(np.sum(clean_predictions(fn, params, x, batch=batch)
                                         == labels))
        for m in classifiers:
            rows.append({"model": m, "corruption": corruption, "severity": int(severity),
                         "n": len(source), "accuracy": correct[m] / max(len(source), 1)})
    return pd.DataFrame(rows)


class SweepArrays(NamedTuple):
    """What `engine` computed, per corruption name: `ssim (L, N)`; `records`, one dict
    per model (in the classifiers' order) of `(L, N)` arrays (`pred`, `correct`,
    `top<k>`, `true_prob`, `confidence`, `loss`; `probs (L, N, K)` when kept); the
    clean images' predictions `(N,)` per model; the source's labels `(N,)` (or None);
    and the images per chunk and device used."""

    ssim: dict
    records: dict
    clean: tuple
    labels: np.ndarray | None
    batch_sizes: dict


def _sweep_cells(program, consts, lv, inverse, identity, clean_of, expect, size, n_models,
                 first, compiling, progress, idx, rows, images, labels, sizes) -> list[dict]:
    """One batch of sweep cells (`store.run_cells`' `compute`): the chunk program on the
    padded batch over the distinct levels `lv`, its outputs spread back to every level
    (`inverse`, see `_distinct_levels`) and cut into one dict per cell. `clean_of`
    (a `_CleanLogits`, or None) gives the clean images' logits and predictions, for a
    program that reuses them at its identity levels (`identity`, see `_chunk_program`;
    None for one that does not) and for the first corruption's cells."""
    signature = (program, rows.shape, images.shape[1:], images.dtype, lv.shape)
    if signature not in _COMPILED:
        _progress.write(compiling, progress=progress)
        _COMPILED.add(signature)
    exp = expect(labels, len(idx))
    clean = None if clean_of is None else clean_of(size, idx, rows, images, sizes)
    extra = () if identity is None else (identity, *clean[0])
    res = program(consts, idx[rows].astype(np.int32), images[rows], exp[rows], lv, *extra)
    res = jax.tree.map(np.asarray, res)
    if inverse is not None:  # (B, distinct levels[, K]) -> (B, L[, K])
        res = (res[0][:, inverse], jax.tree.map(lambda a: a[:, inverse], res[1]))
    cells, at = [], 0
    for j, k in enumerate(sizes):
        part = slice(j * size, j * size + k)
        cell = {"ssim": res[0][part]}
        for m, rec in enumerate(res[1]):
            cell.update({f"{m}/{f}": v[part] for f, v in rec.items()})
        if first:
            cell.update({f"clean/{m}": clean[1][part][:, m] for m in range(n_models)})
            if labels is not None:
                cell["labels"] = labels[at:at + k]
        cells.append(cell)
        at += k
    return cells


def engine(key: jax.Array, classifiers: Mapping[str, tuple[Callable, object]], source,
           schedule: Mapping, expected: Mapping[str, tuple[int | None, ...]], *,
           original: tuple[int, ...] | None = None, limit_ssim: float | None = None,
           top_k: tuple[int, ...] = (1,), keep_probs: bool = False,
           batch_size: int | None = None, ssim_data_range: float = 1.0,
           store: SweepStore | None = None, devices: int | None = None,
           num_classes: int | None = None, wait_timeout: float = 3600.0,
           table: str = registry.tables.DEFAULT, image_shape: tuple | None = None,
           log: Callable[[str], None] = print, progress: bool | None = None) -> SweepArrays:
    """Corrupts every image at every level of every corruption, scores SSIM, predicts,
    and reduces each (image, level) to a record on device.

    Args:
        classifiers: name -> `(apply_fn, params)`, `apply_fn(params, (B, H, W, C)) ->
            logits (B, K)`.
        source: a data source (`data.stream.as_source`): chunks are read as they are computed,
            the next one on a host thread while the current one runs, and checked
            (`data.stream.check_chunk`); uint8 images are converted on device.
        schedule: corruption name -> 1-D float64 levels (checked by the caller).
        expected: corruption name -> per model, its expected class, or None for the
            image's label.
        original: per model, the class an image above `limit_ssim` is expected to be.
        key: PRNG key; corruption `c` (its position in `schedule`) of image `i` at step
            `s` draws with `fold_in(fold_in(fold_in(key, c), i), s)`.
        top_k: the k of the top-k records (k = 1 is `correct`).
        keep_probs: keep every probability vector (`records[...]["probs"]`; memory
            and files grow with K).
        batch_size: images per device in a chunk (per core on one CPU device, see
            `sharding.cpu_threads`), or None to pick it from the free
            memory (`auto_batch_size`); a `store` that has a size for a corruption
            keeps it.
        ssim_data_range: SSIM's `data_range`.
        store: where finished cells are saved and loaded (resume), or None. Needed
            when several processes sweep (`jax.process_count() > 1`).
        devices: split chunks over the first `devices` local devices (default all).
        num_classes: labels must lie in `[0, num_classes)`.
        wait_timeout: with several processes, seconds to wait for another process's
            next cell before giving up with an error naming the missing cells.
        table: the benchmark whose parameters the kernels use (`corruptions.get`).
        image_shape: the images' `(H, W, C)` when the caller knows it (else one image is
            read to learn it): the kernels are traced on it to find the levels to compute.
        log, progress: one line per corruption; a bar per corruption.

    Several processes (after `jax.distributed.initialize`): the cells (`batch_size`
    consecutive images) are split into one contiguous block per process; each process
    reads and computes only its block on its own devices (no collectives), writes
    its cells to `store`, then waits for the others' cells and assembles the same
    result as one process would, bit for bit.

    Returns:
        A `SweepArrays`.
    """
    mesh = local_mesh(devices)
    parts = workers(mesh)  # the devices, or on one CPU device the parts run at once
    nproc, proc = jax.process_count(), jax.process_index()
    if nproc > 1 and store is None:
        raise ValueError("a sweep over several processes needs cells_dir (a folder every "
                         "process can write, e.g. --out on a shared file system).")
    fns = tuple(fn for fn, _ in classifiers.values())
    params = tuple(p for _, p in classifiers.values())
    n = len(source)
    original = jnp.asarray(original if original is not None else (-1,) * len(fns), jnp.int32)
    limit = jnp.float32(np.inf if limit_ssim is None else limit_ssim)
    labelled = any(e is None for ex in expected.values() for e in ex)
    read = stream.checked_reader(source, num_classes=num_classes, labelled=labelled or None)

    def expect(name, labels, size):  # (size, models) expected classes
        return np.stack([labels if e is None else np.full(size, e, np.int32)
                         for e in expected[name]], -1)

    sample = None  # the memory probe's images, read when a chunk size is to be chosen
    clean_of = kept = None  # the clean images' logits (`_CleanLogits`), once an image is known
    out = SweepArrays({}, {}, (), None, {})
    pool = ThreadPoolExecutor(1)
    image = None if image_shape is None else jax.ShapeDtypeStruct(tuple(image_shape),
                                                                   jnp.float32)
    for c_index, name in enumerate(schedule):
        first = c_index == 0
        kernel = registry.get(name, table=table).apply
        if image is None:  # the kernels' input, for `_distinct_levels`
            image = jax.ShapeDtypeStruct(read(np.arange(1))[0].shape[1:], jnp.float32)
        lv, inverse = _distinct_levels(kernel, image,
                                      np.asarray(registry.kernel_levels(name, schedule[name])))
        if clean_of is None:
            logits = [jax.eval_shape(f, p, jax.ShapeDtypeStruct((1, *image.shape), image.dtype))
                      for f, p in zip(fns, params, strict=True)]
            kept = n * sum(x.shape[-1] * x.dtype.itemsize + 4 for x in logits) <= \
                CLEAN_LOGITS_BYTES  # the logits and the predictions of every image
            clean_of = _CleanLogits(_clean_program(fns, mesh), params, n, kept)
        # the identity level from the clean pass: the first corruption runs that pass
        # anyway (the clean predictions); the others while its logits are kept
        identity = _identity_steps(name, table, lv)
        reuse = bool(identity.any()) and (first or kept)
        lv = jnp.asarray(lv)
        consts = (params, jax.random.fold_in(key, c_index), original, limit)
        program = _chunk_program(kernel, fns, mesh,
                                 float(ssim_data_range),
                                 tuple(top_k), keep_probs, reuse)
        start = time.perf_counter()
        # A chunk larger than the data would only compute padding copies.
        per_part = -(-n // parts)
        size = None if batch_size is None else min(batch_size, per_part)
        size = size if store is None else store.fix_batch_size(name, size)
        if size is None and proc > 0:  # process 0 chooses; the others take its size
            size = store.wait_batch_size(name, wait_timeout)
        if size is None:
            sample = sample or read(np.arange(min(n, 8 * parts)))
            extra = None if not reuse else (lambda probe, ident=identity, shapes=logits: (
                ident, *(np.zeros((probe, x.shape[-1]), x.dtype) for x in shapes)))
            size = min(auto_batch_size(program, consts, sample[0], expect(name, sample[1],
                                                                           len(sample[0])),
                                       lv, devices=parts, n=n, extra=extra) // parts,
                       per_part)
            log(f"  sweep {name}: {size} images per chunk and device (from the free memory)")
        if store is not None:
            store.remember(name, size)
        out.batch_sizes[name] = size

        compute = functools.partial(_sweep_cells, program, consts, lv, inverse,
                                    identity if reuse else None,
                                    clean_of if reuse or first else None,
                                    functools.partial(expect, name), size, len(fns), first,
                                    f"  compiling the {name} sweep program (once per process "
                                    "and chunk shape) ...", progress)
        ordered = run_cells(name, n, size, parts, read, compute, store=store, pool=pool,
                            units=len(schedule[name]), desc=f"sweep {name}", unit="img-lvl",
                            wait_timeout=wait_timeout, log=lambda s: log(f"  sweep {s}"),
                            progress=progress)
        out.ssim[name] = np.concatenate([c["ssim"] for c in ordered]).T  # (L, N)
        out.records[name] = tuple(
            {k.split("/", 1)[1]: np.swapaxes(np.concatenate([c[k] for c in ordered]), 0, 1)
             for k in ordered[0] if k.startswith(f"{m}/")} for m in range(len(fns)))
        if first:
            out = out._replace(
                clean=tuple(np.concatenate([c[f"clean/{m}"] for c in ordered])
                            for m in range(len(fns))),
                labels=(np.concatenate([c["labels"] for c in ordered])
                        if "labels" in ordered[0] else None))
        same = "" if len(lv) == len(schedule[name]) else f" ({len(lv)} distinct)"
        log(f"  sweep {name}: {len(schedule[name])} levels{same} x {n} images x {len(fns)} models "
            f"in {time.perf_counter() - start:.1f} s")
    pool.shutdown()
    return out


def to_table(arrays: SweepArrays, schedule: Mapping, model_names, expected: Mapping,
             clean_accuracy: Mapping, *, original: Mapping | None = None,
             limit_ssim: float | None = None):
    """The sweep's table and per-image arrays from `engine`'s arrays.

    Args:
        arrays: `engine`'s output.
        schedule: corruption name -> levels (as `engine` got them).
        model_names: the classifiers' names, in `engine`'s order.
        expected: `(model, corruption)` -> `(N,)` int expected class per image.
        clean_accuracy: model -> accuracy on the clean images (NaN where undefined).
        original: model -> index of its `original` class (-1: none); with
            `limit_ssim`, an image whose SSIM is above it is expected `original` (as
            the engine scored it).

    Returns:
        `(table, per_image)` as `run` describes them.
    """
    import pandas as pd

    rows, per_image = [], {}
    for name, levels in schedule.items():
        score = arrays.ssim[name]
        per_image[f"{name}/ssim"] = score
        for m, rec in zip(model_names, arrays.records[name], strict=True):
            exp = np.broadcast_to(expected[m, name], score.shape)
            if limit_ssim is not None:
                exp = np.where(score > limit_ssim, original[m], exp).astype(np.int32)
            per_image[f"{name}/{m}/expected"] = np.ascontiguousarray(exp)
            for field, values in rec.items():
                per_image[f"{name}/{m}/{field}"] = values
            tops = sorted((int(k[3:]), k) for k in rec if k.startswith("top"))
            for step in range(len(levels)):
                row = {"model": m, "corruption": name, "step": step,
                       "level": float(levels[step]), "n": score.shape[1],
                       "accuracy": float(rec["correct"][step].mean())}
                row.update({f"top{k}_accuracy": float(rec[key][step].mean())
                            for k, key in tops})
                row.update({"ssim_mean": float(score[step].mean()),
                            "ssim_std": float(score[step].std()),
                            "confidence": float(rec["confidence"][step].mean()),
                            "true_prob": float(rec["true_prob"][step].mean()),
                            "loss": float(rec["loss"][step].mean()),
                            "clean_accuracy": clean_accuracy[m]})
                rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["batch_sizes"] = dict(arrays.batch_sizes)
    return table, per_image


def run(key: jax.Array, classifiers: Mapping[str, tuple[Callable, object]], images,
        labels=None, *, corruptions=("scale_up", "median_blur", "gaussian_noise"),
        levels: Mapping[str, np.ndarray] | None = None,
        class_names: Mapping[str, list[str]] | None = None, batch_size: int | None = None,
        target: str = "corruption_type", protocol: str = "continuous",
        table: str = registry.tables.DEFAULT,
        ssim_data_range: float | None = None, limit_ssim: float | None = None,
        top_k: Sequence[int] | None = None, keep_probs: bool = False,
        cells_dir: str | None = None, devices: int | None = None,
        wait_timeout: float = 3600.0,
        log: Callable[[str], None] = print, progress: bool | None = None):
    """Sweeps every classifier over every (corruption, level).

    Args:
        classifiers: name -> `(apply_fn, params)`, `apply_fn(params, (N, H, W, C)) ->
            logits (N, K)`.
        images: clean `(N, H, W, C)` images, float in [0, 1] or uint8 (NumPy, or a
            `numpy.memmap`: only the chunks in use are read), or any data source with
            `len()` and `__getitem__(indices) -> (images, labels)`
            (`jaxrobust.data.stream`: tfds / grain element sources through
            `ElementSource`, lazy `FolderSource`). A source is read a chunk at a time,
            the next chunk prefetched; bad shapes, dtypes or labels fail with one error
            (the first chunk before any compute).
        labels: `(N,)` int labels with an array (needed for `target="labels"`); None
            with a source.
        corruptions: names (aliases allowed).
        levels: name -> 1-D levels (floats; float64 kept: the median's float radii are
            passed exactly); default `corruptions.seed_levels(name, protocol=protocol)`
            for the image size.
        key: PRNG key.
        class_names: model name -> its class names; `target="corruption_type"` needs
            each corruption's class (`scale_up`, ...) and `original` among them.
        batch_size: images per device in a chunk (a chunk is `batch_size x devices`
            images, on one CPU device `batch_size x cores`: `sharding.workers`;
            memory bound; results do not depend on it); at most
            `ceil(N / devices)` is used. None picks it per corruption from the free
            memory (`auto_batch_size`).
        target: `corruption_type` — is the corruption recognised (the study's
            question); `labels` — does the classifier keep the image's label.
        protocol: the default levels: `continuous` (the study's schedule as a
            continuous family, SSIM range 1) or `study` (the levels the study's float64
            loop computed: whole-pixel crops, float disk radii; SSIM range 2, as its
            `structural_similarity` on float64 images took). See docs/study.md.
        table: the benchmark whose parameters and formulas the ImageNet-C
            corruptions follow (`corruptions.tables.BENCHMARKS`): `imagenet` (default),
            `cifar10`, `tinyimagenet`, `imagenet64`; default levels are its severities
            0, 0.25, .., 5.
        ssim_data_range: SSIM's `data_range`; None: the protocol's (1 or 2).
        limit_ssim: the study's "limit value" (its figure 39): with `corruption_type`,
            a corrupted image whose SSIM to the clean one is above this is labelled
            `original` (so predicting its corruption there is wrong). None: no relabel.
        top_k: the k of the top-k accuracies; default (1, 5) when every model has at
            least 5 classes, else (1,).
        keep_probs: also return every probability vector (`<corruption>/<model>/probs
            (steps, N, K)`); off by default, so that memory and files do not grow
            with the class count.
        cells_dir: folder for finished (corruption, chunk) cells: a rerun on the same
            folder resumes, and refuses if anything the results depend on changed.
            Needed with several processes (every process writes its cells there).
        devices: split chunks over the first `devices` local devices (default all).
        wait_timeout: several processes: seconds without a new cell from another
            process before giving up (an error naming the missing cells).
        log: where one line per corruption goes (chunk size, resumed chunks, time).
        progress: a bar per corruption (image-levels done, rate, ETA, resumed
            chunks): True / False, or None for the process default (off in library
            calls, on in the command line; see `jaxrobust._progress`).

    Several processes: after `jax.distributed.initialize(...)`, call `run` with the
    same arguments in every process; the images are split over the processes (each
    reads only its share of the source), and every process returns the same result,
    equal bit for bit to a one-process run. Write files on process 0 only.

    Returns:
        `(table, per_image)`: a pandas DataFrame with one row per (model, corruption,
        step) — level, n, accuracy, top<k>_accuracy (k > 1), ssim_mean, ssim_std,
        confidence (mean top probability), true_prob (mean probability of the
        expected class), loss (mean cross-entropy), clean_accuracy — and a dict of
        per-image arrays (`<corruption>/ssim (steps, N)`, `<corruption>/<model>/pred`,
        `.../correct`, `.../top<k>`, `.../confidence`, `.../true_prob`, `.../loss`,
        `.../expected` (steps, N), `clean/<model>/pred (N,)`).
        `table.attrs["batch_sizes"]` holds the images per chunk and device used per
        corruption. `jaxrobust.store.write_results` writes both to files.
        `clean_accuracy` is the model's accuracy on the clean images (labels: its
        labels; corruption_type: `original`; NaN for a model without that class): the
        reference of every robustness summary, never a sweep step (step 0 may be the
        identity corruption).
    """
    names = _check(classifiers, corruptions, target, protocol)
    source = stream.as_source(images, labels)
    n = len(source)
    if n == 0:
        raise ValueError("no images to sweep.")
    first, first_labels = stream.check_chunk(*source[np.arange(1)], [0], like=None,
                                             num_classes=None, labelled=None)
    shape = first.shape[1:]
    if target == "labels" and first_labels is None:
        raise ValueError("target='labels' needs the images' labels.")
    registry.tables.check(table)
    schedule = _schedule(names, levels, shape, protocol, table)
    if ssim_data_range is None:
        ssim_data_range = registry.SSIM_DATA_RANGE[protocol]
    if not ssim_data_range > 0:
        raise ValueError(f"ssim_data_range must be positive, got {ssim_data_range}.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    spec = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    counts = {m: int(jax.eval_shape(fn, p, spec).shape[-1]) for m, (fn, p) in
              classifiers.items()}
    top_k = tuple(sorted(set(top_k if top_k is not None else
                             ((1, 5) if min(counts.values()) >= 5 else (1,)))))
    if top_k[0] < 1 or top_k[-1] > min(counts.values()):
        raise ValueError(f"top_k must lie in [1, {min(counts.values())}] (the class count), "
                         f"got {top_k}.")
    model_names = list(classifiers)
    classes = {m: list((class_names or {}).get(m) or []) for m in model_names}
    expected = {}
    for name in names:
        if target == "labels":
            expected[name] = (None,) * len(model_names)
            continue
        for m in model_names:
            if name not in classes[m]:
                raise ValueError(f"model {m!r} has no class {name!r} (its classes: "
                                 f"{(class_names or {}).get(m)}); sweep with "
                                 "target='labels' or train it on this corruption.")
        expected[name] = tuple(classes[m].index(name) for m in model_names)
    original = {m: classes[m].index("original") if "original" in classes[m] else -1
                for m in model_names}
    relabel = limit_ssim is not None and target == "corruption_type"
    if relabel and min(original.values()) < 0:
        lacking = [m for m in model_names if original[m] < 0][0]
        raise ValueError(f"limit_ssim relabels images as 'original', but model {lacking!r} "
                         "has no class 'original'; drop limit_ssim.")
    store = None if cells_dir is None else SweepStore(cells_dir, fingerprint(
        key, classifiers, stream.source_digest(source), names, schedule, target,
        class_names, ssim_data_range, limit_ssim=limit_ssim if relabel else None,
        top_k=top_k, keep_probs=keep_probs, table=table))
    arrays = engine(key, classifiers, source, {name: schedule[name] for name in names},
                    expected, original=tuple(original.values()),
                    limit_ssim=limit_ssim if relabel else None, top_k=top_k,
                    keep_probs=keep_probs, batch_size=batch_size,
                    ssim_data_range=float(ssim_data_range), store=store, devices=devices,
                    num_classes=min(counts.values()) if target == "labels" else None,
                    wait_timeout=wait_timeout, table=table, image_shape=shape, log=log,
                    progress=progress)
    labels = arrays.labels
    per_clean, clean_accuracy = {}, {}
    for m, pred in zip(model_names, arrays.clean, strict=True):
        per_clean[f"clean/{m}/pred"] = pred
        if target == "labels":
            clean_accuracy[m] = float(np.mean(pred == labels))
        else:
            clean_accuracy[m] = (float(np.mean(pred == original[m])) if original[m] >= 0
                                 else float("nan"))
    exp = {(m, name): (labels if e is None else np.full(n, e, np.int32))
           for name in names for m, e in zip(model_names, expected[name], strict=True)}
    table, per_image = to_table(arrays, schedule, model_names, exp, clean_accuracy,
                                original=original, limit_ssim=limit_ssim if relabel else None)
    return table, {**per_clean, **per_image}
