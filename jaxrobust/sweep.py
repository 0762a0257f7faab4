"""The intensity-sweep engine: corrupt -> SSIM -> predict, for every level at once.

For each corruption one compiled program takes a chunk of clean images and every
level of the schedule: `lax.map` walks the levels (bounding memory), `vmap` covers
the chunk's images, and the chunk is split over every local device. The program is
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
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _prng, _progress
from jaxrobust import corruptions as registry
from jaxrobust.metrics import ssim_compare, ssim_reference
from jaxrobust.sharding import available_bytes, local_mesh, pad_leading, shard_batch
from jaxrobust.store import SweepStore, fingerprint

TARGETS = ("corruption_type", "labels")
_COMPILED: set = set()  # (program, shapes) already run in this process


def _check(classifiers, images, labels, corruptions, levels, target, protocol):
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}.")
    if protocol not in registry.PROTOCOLS:
        raise ValueError(f"protocol must be one of {registry.PROTOCOLS}, got {protocol!r}.")
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype.kind != "f":
        raise ValueError(f"images must be float (N, H, W, C) in [0, 1], got {images.dtype} "
                         f"{images.shape}.")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels; pass one label "
                         "per image.")
    if target == "labels" and labels is None:
        raise ValueError("target='labels' needs the images' labels.")
    if not classifiers:
        raise ValueError("no classifiers to sweep.")
    names = [registry.get(c).name for c in corruptions]
    schedule = {}
    for name in names:
        lv = np.asarray(levels[name] if levels and name in levels else
                        registry.seed_levels(name, image_size=images.shape[1],
                                             protocol=protocol), np.float64)
        low = registry.get(name).min_level
        top = registry.get(name).max_level(images.shape[1], images.shape[2])
        if lv.ndim != 1 or len(lv) == 0 or lv.min() < low or lv.max() > top:
            raise ValueError(f"levels for {name} must be a non-empty list in [{low:g}, {top:g}] "
                             f"({registry.get(name).level_meaning}); got {lv.tolist()[:5]}...")
        schedule[name] = lv
    return images, names, schedule


def auto_batch_size(program, params, images, levels, *, devices: int, fraction: float = 0.25,
                    budget_bytes: float | None = None, largest: int = 512) -> int:
    """Images per chunk so that one chunk's program fits `fraction` of free memory.

    Compiles the chunk program for a probe chunk of `8 x devices` images, reads XLA's
    own memory analysis (temporaries, arguments, outputs) and scales it linearly.
    """
    probe = 8 * devices
    idx = np.arange(probe, dtype=np.int32)
    sample = np.resize(images[:probe], (probe,) + images.shape[1:])
    stats = program.lower(params, idx, sample, levels).compile().memory_analysis()
    used = 0.0 if stats is None else float(stats.temp_size_in_bytes
                                           + stats.argument_size_in_bytes
                                           + stats.output_size_in_bytes)
    budget = fraction * available_bytes() if budget_bytes is None else budget_bytes
    per_image = max(used / probe, 1.0)
    size = int(budget // per_image) // devices * devices
    return int(min(max(size, devices), largest, max(len(images), 1)))


@functools.lru_cache(maxsize=64)
def _chunk_program(kernel: Callable, fns: tuple[Callable, ...], mesh, data_range: float = 1.0):
    """The compiled sweep of one corruption: `((params, key), idx (B,), clean (B, H, W, C),
    levels (L, ...)) -> (ssim (B, L), probs per model (B, L, K))`, `params` a tuple with
    one entry per model and `key` the corruption's base key; `levels` as
    `corruptions.kernel_levels` encodes them; SSIM with range `data_range`.

    Built once per (kernel, models, mesh) and kept, so that a second sweep with the
    same kernel, models and chunk shape (other images, another key, a benchmark's
    second run) reuses the compiled program instead of compiling it again.
    """

    def chunk(consts, idx, clean, levels):
        params, base = consts
        reference = jax.vmap(ssim_reference)(clean)  # the clean images' half of SSIM, once

        def one_level(step_level):
            step, level = step_level
            keys = _prng.item_keys(base, idx, step)
            bad = jax.vmap(kernel, in_axes=(0, 0, None))(keys, clean, level)
            scores = jax.vmap(lambda r, b: ssim_compare(r, b, data_range=data_range))(
                reference, bad)
            probs = tuple(jax.nn.softmax(f(p, bad), -1) for f, p in zip(fns, params, strict=True))
            return scores, probs

        steps = jnp.arange(levels.shape[0])
        scores, probs = jax.lax.map(one_level, (steps, levels))
        # batch axis first for the device split: (B, L), (B, L, K)
        return jnp.swapaxes(scores, 0, 1), tuple(jnp.swapaxes(p, 0, 1) for p in probs)

    return shard_batch(chunk, in_axes=(None, 0, 0, None), mesh=mesh)


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


class SweepArrays(NamedTuple):
    """What `engine` computed, per corruption name: `ssim (L, N)`, `probs` (one
    `(L, N, K)` array per model, in the classifiers' order) and the images per chunk and
    device it used."""

    ssim: dict
    probs: dict
    batch_sizes: dict


def engine(key: jax.Array, classifiers: Mapping[str, tuple[Callable, object]], images,
           schedule: Mapping, *, batch_size: int | None = None, ssim_data_range: float = 1.0,
           store: SweepStore | None = None, devices: int | None = None,
           log: Callable[[str], None] = print, progress: bool | None = None) -> SweepArrays:
    """Corrupts every image at every level of every corruption, scores SSIM, predicts.

    Args:
        classifiers: name -> `(apply_fn, params)`, `apply_fn(params, (B, H, W, C)) ->
            logits (B, K)`.
        images: clean `(N, H, W, C)` float images in [0, 1] (NumPy; chunks are copied
            to the devices as they run).
        schedule: corruption name -> 1-D float64 levels (checked by the caller).
        key: PRNG key; corruption `c` (its position in `schedule`) of image `i` at step
            `s` draws with `fold_in(fold_in(fold_in(key, c), i), s)`.
        batch_size: images per device in a chunk, or None to pick it from the free
            memory (`auto_batch_size`); a `store` that has a size for a corruption
            keeps it.
        ssim_data_range: SSIM's `data_range`.
        store: where finished cells are saved and loaded (resume), or None.
        devices: split chunks over the first `devices` local devices (default all).
        log, progress: one line per corruption; a bar per corruption.

    Returns:
        A `SweepArrays`.
    """
    mesh = local_mesh(devices)
    ndev = mesh.devices.size
    fns = tuple(fn for fn, _ in classifiers.values())
    params = tuple(p for _, p in classifiers.values())
    n = len(images)
    out = SweepArrays({}, {}, {})
    for c_index, name in enumerate(schedule):
        lv = jnp.asarray(registry.kernel_levels(name, schedule[name]))
        base = jax.random.fold_in(key, c_index)
        program = _chunk_program(registry.get(name).apply, fns, mesh, float(ssim_data_range))
        start = time.perf_counter()
        # A chunk larger than the data would only compute padding copies.
        per_device = -(-n // ndev)
        size = None if batch_size is None else min(batch_size, per_device)
        size = size if store is None else store.fix_batch_size(name, size)
        if size is None:
            size = min(auto_batch_size(program, (params, base), images, lv, devices=ndev)
                       // ndev, per_device)
            log(f"  sweep {name}: {size} images per chunk and device (from the free memory)")
        if store is not None:
            store.remember(name, size)
        out.batch_sizes[name] = size
        # Every device always gets `size` consecutive images (the last chunk is padded),
        # so each image meets the same computation whatever the device count.
        step = size * ndev
        scores, probs, resumed = [], [], 0
        bar = _progress.bar(total=n * len(lv), desc=f"sweep {name}", unit="img-lvl",
                            unit_scale=True, progress=progress)
        for s in range(0, n, step):
            groups = [(g, min(n, g + size)) for g in range(s, min(n, s + step), size)]
            cells = [None if store is None else store.load(name, g, e - g) for g, e in groups]
            if any(c is None for c in cells):
                idx = np.minimum(np.arange(s, s + step, dtype=np.int32), n - 1)
                signature = (program, idx.shape, images.shape[1:], lv.shape)
                if signature not in _COMPILED:
                    _progress.write(f"  compiling the {name} sweep program (once per "
                                    "process and chunk shape) ...", progress=progress)
                    _COMPILED.add(signature)
                sc, pr = program((params, base), idx, images[idx], lv)
                sc, pr = np.asarray(sc), [np.asarray(p) for p in pr]
                for j, ((g, e), c) in enumerate(zip(groups, cells, strict=True)):
                    if c is None:
                        part = slice(g - s, e - s)
                        cells[j] = sc[part], [p[part] for p in pr]
                        if store is not None:
                            store.save(name, g, *cells[j])
            else:
                resumed += len(cells)
            scores += [c[0] for c in cells]
            probs += [c[1] for c in cells]
            if resumed:
                bar.set_postfix(resumed=f"{resumed} chunks", refresh=False)
            bar.update((min(n, s + step) - s) * len(lv))
        bar.close()
        if resumed:
            log(f"  sweep {name}: {resumed} chunks resumed")
        out.ssim[name] = np.concatenate(scores).T  # (L, N)
        out.probs[name] = tuple(np.concatenate([p[m] for p in probs]).transpose(1, 0, 2)
                                for m in range(len(fns)))  # (L, N, K) per model
        log(f"  sweep {name}: {len(lv)} levels x {n} images x {len(fns)} models "
            f"in {time.perf_counter() - start:.1f} s")
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
            `limit_ssim`, an image whose SSIM is above it is expected `original`.

    Returns:
        `(table, per_image)` as `run` describes them.
    """
    import pandas as pd

    rows, per_image = [], {}
    for name, levels in schedule.items():
        score = arrays.ssim[name]
        per_image[f"{name}/ssim"] = score
        for m, prob in zip(model_names, arrays.probs[name], strict=True):
            pred = prob.argmax(-1)
            exp = np.broadcast_to(expected[m, name], pred.shape)
            if limit_ssim is not None:
                exp = np.where(score > limit_ssim, original[m], exp).astype(np.int32)
            correct = pred == exp
            confidence = prob.max(-1)
            loss = -np.log(np.maximum(np.take_along_axis(prob, exp[..., None], -1)[..., 0],
                                      1e-12))
            per_image[f"{name}/{m}/pred"] = pred.astype(np.int32)
            per_image[f"{name}/{m}/confidence"] = confidence
            per_image[f"{name}/{m}/correct"] = correct
            per_image[f"{name}/{m}/expected"] = np.ascontiguousarray(exp)
            for step in range(len(levels)):
                rows.append({"model": m, "corruption": name, "step": step,
                             "level": float(levels[step]), "n": pred.shape[1],
                             "accuracy": float(correct[step].mean()),
                             "ssim_mean": float(score[step].mean()),
                             "ssim_std": float(score[step].std()),
                             "confidence": float(confidence[step].mean()),
                             "loss": float(loss[step].mean()),
                             "clean_accuracy": clean_accuracy[m]})
    table = pd.DataFrame(rows)
    table.attrs["batch_sizes"] = dict(arrays.batch_sizes)
    return table, per_image


def run(key: jax.Array, classifiers: Mapping[str, tuple[Callable, object]], images,
        labels=None, *, corruptions=("scale_up", "median_blur", "gaussian_noise"),
        levels: Mapping[str, np.ndarray] | None = None,
        class_names: Mapping[str, list[str]] | None = None, batch_size: int | None = None,
        target: str = "corruption_type", protocol: str = "continuous",
        ssim_data_range: float | None = None, limit_ssim: float | None = None,
        cells_dir: str | None = None, devices: int | None = None,
        log: Callable[[str], None] = print, progress: bool | None = None):
    """Sweeps every classifier over every (corruption, level).

    Args:
        classifiers: name -> `(apply_fn, params)`, `apply_fn(params, (N, H, W, C)) ->
            logits (N, K)`.
        images: clean `(N, H, W, C)` float images in [0, 1].
        labels: `(N,)` int labels (needed for `target="labels"`).
        corruptions: names (aliases allowed).
        levels: name -> 1-D levels (floats; float64 kept: the median's float radii are
            passed exactly); default `corruptions.seed_levels(name, protocol=protocol)`
            for the image size.
        key: PRNG key.
        class_names: model name -> its class names; `target="corruption_type"` needs
            each corruption's class (`scale_up`, ...) and `original` among them.
        batch_size: images per device in a chunk (a chunk is `batch_size x devices`
            images; memory bound; results do not depend on it); at most
            `ceil(N / devices)` is used. None picks it per corruption from the free
            memory (`auto_batch_size`).
        target: `corruption_type` — is the corruption recognised (the study's
            question); `labels` — does the classifier keep the image's label.
        protocol: the default levels: `continuous` (the study's schedule as a
            continuous family, SSIM range 1) or `study` (the levels the study's float64
            loop computed: whole-pixel crops, float disk radii; SSIM range 2, as its
            `structural_similarity` on float64 images took). See docs/study.md.
        ssim_data_range: SSIM's `data_range`; None: the protocol's (1 or 2).
        limit_ssim: the study's "limit value" (its figure 39): with `corruption_type`,
            a corrupted image whose SSIM to the clean one is above this is labelled
            `original` (so predicting its corruption there is wrong). None: no relabel.
        cells_dir: folder for finished (corruption, chunk) cells: a rerun on the same
            folder resumes, and refuses if anything the results depend on changed.
        devices: split chunks over the first `devices` local devices (default all).
        log: where one line per corruption goes (chunk size, resumed chunks, time).
        progress: a bar per corruption (image-levels done, rate, ETA, resumed
            chunks): True / False, or None for the process default (off in library
            calls, on in the command line; see `jaxrobust._progress`).

    Returns:
        `(table, per_image)`: a pandas DataFrame with one row per (model, corruption,
        step) — level, n, accuracy, ssim_mean, ssim_std, confidence, loss,
        clean_accuracy — and a dict of per-image arrays (`<corruption>/ssim (steps, N)`,
        `<corruption>/<model>/pred (steps, N)`, `.../confidence`, `.../expected`
        (steps, N), `clean/<model>/pred (N,)`). `table.attrs["batch_sizes"]` holds the
        images per chunk and device used per corruption. `jaxrobust.store.
        write_results` writes both to files. `clean_accuracy` is the model's
        accuracy on the clean images (labels: its labels; corruption_type: `original`;
        NaN for a model without that class): the reference of every robustness summary,
        never a sweep step (step 0 may be the identity corruption).
    """
    images, names, schedule = _check(classifiers, images, labels, corruptions, levels, target,
                                     protocol)
    if ssim_data_range is None:
        ssim_data_range = registry.SSIM_DATA_RANGE[protocol]
    if not ssim_data_range > 0:
        raise ValueError(f"ssim_data_range must be positive, got {ssim_data_range}.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    store = None if cells_dir is None else SweepStore(cells_dir, fingerprint(
        key, classifiers, images, labels, names, schedule, target, class_names,
        ssim_data_range))
    model_names = list(classifiers)
    classes = {m: list((class_names or {}).get(m) or []) for m in model_names}
    expected = {}
    for m in model_names:
        for name in names:
            if target == "labels":
                expected[m, name] = np.asarray(labels, np.int32)
                continue
            if name not in classes[m]:
                raise ValueError(f"model {m!r} has no class {name!r} (its classes: "
                                 f"{(class_names or {}).get(m)}); sweep with "
                                 "target='labels' or train it on this corruption.")
            expected[m, name] = np.full(len(images), classes[m].index(name), np.int32)
    original = {m: classes[m].index("original") if "original" in classes[m] else -1
                for m in model_names}
    relabel = limit_ssim is not None and target == "corruption_type"
    if relabel and min(original.values()) < 0:
        lacking = [m for m in model_names if original[m] < 0][0]
        raise ValueError(f"limit_ssim relabels images as 'original', but model {lacking!r} "
                         "has no class 'original'; drop limit_ssim.")
    n = len(images)
    per_clean, clean_accuracy = {}, {}
    for m, (fn, p) in classifiers.items():
        pred = clean_predictions(fn, p, images, batch=max(1, min(n, batch_size or 64)))
        per_clean[f"clean/{m}/pred"] = pred
        if target == "labels":
            clean_accuracy[m] = float(np.mean(pred == np.asarray(labels)))
        else:
            clean_accuracy[m] = (float(np.mean(pred == original[m])) if original[m] >= 0
                                 else float("nan"))
    arrays = engine(key, classifiers, images, {name: schedule[name] for name in names},
                    batch_size=batch_size, ssim_data_range=float(ssim_data_range),
                    store=store, devices=devices, log=log, progress=progress)
    table, per_image = to_table(arrays, schedule, model_names, expected, clean_accuracy,
                                original=original, limit_ssim=limit_ssim if relabel else None)
    return table, {**per_clean, **per_image}
