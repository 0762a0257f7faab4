"""The intensity-sweep engine: corrupt -> SSIM -> predict, for every level at once.

For each corruption one compiled program takes a chunk of clean images and every
level of the schedule: `lax.map` walks the levels (bounding memory), `vmap` covers
the chunk's images, and the chunk is split over every local device. The program is
kept (per kernel, models and mesh), so a later sweep with the same models and chunk
shape does not compile it again; a chunk is never larger than the data. Random keys are
per (corruption, image index, step), so results do not depend on the chunk size or
the device count.

Resuming: with a `cells_dir`, every finished (corruption, chunk) cell — SSIMs and
every model's probabilities for its images at every level — is written there
atomically (`<corruption>/<first image>.npz`), beside `sweep.json`, a fingerprint of
everything the results depend on (images, labels, models and their parameters,
corruptions, levels, key, chunk size, target). A rerun on the same folder loads the
finished cells and computes only the others; a rerun with anything changed is
refused, naming what changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrobust import _progress
from jaxrobust import corruptions as registry
from jaxrobust.metrics import ssim_compare, ssim_reference
from jaxrobust.sharding import local_mesh, pad_leading, shard_batch

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


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def fingerprint(classifiers, images, labels, names, schedule, key, target, class_names,
                ssim_data_range: float = 1.0) -> dict:
    """Short hashes of everything a sweep's results depend on, by component."""
    return {
        "ssim_data_range": float(ssim_data_range),
        "images": _digest(images),
        "labels": _digest(np.zeros(0) if labels is None else labels),
        "models": {m: _digest(*jax.tree.leaves(classifiers[m][1])) for m in classifiers},
        "class_names": {m: list((class_names or {}).get(m) or []) for m in classifiers},
        "corruptions": list(names),
        "levels": {n: _digest(schedule[n]) for n in names},
        "key": _digest(jax.random.key_data(key)),
        "target": target,
    }


class CellStore:
    """Finished sweep cells on disk: one `.npz` per (corruption, chunk), atomic writes."""

    def __init__(self, root: str, record: dict):
        self.root = root
        os.makedirs(root, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise PermissionError(f"sweep folder {root} is not writable; pass another --out.")
        path = os.path.join(root, "sweep.json")
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            changed = [k for k in record if k != "batch_sizes" and old.get(k) != record[k]]
            if changed:
                raise ValueError(
                    f"{root} holds a sweep with other {', '.join(changed)}; refusing to mix "
                    "results. Pass another --out, or delete the folder to start afresh.")
            self.batch_sizes = dict(old.get("batch_sizes", {}))
        else:
            self.batch_sizes = {}
        self.record = record
        for d, _, files in os.walk(root):  # leftovers of a write that was cut off
            for f in files:
                if ".tmp" in f:
                    os.remove(os.path.join(d, f))

    def fix_batch_size(self, name: str, batch_size: int | None) -> int | None:
        """The chunk size used for `name` before (a rerun keeps it), else `batch_size`."""
        before = self.batch_sizes.get(name)
        if before is not None and batch_size is not None and before != batch_size:
            raise ValueError(f"{self.root} was swept with batch_size {before} for {name}; "
                             f"rerun with the same batch size (got {batch_size}) or another "
                             "--out.")
        return before if before is not None else batch_size

    def remember(self, name: str, batch_size: int) -> None:
        self.batch_sizes[name] = batch_size
        self._write_json("sweep.json", {**self.record, "batch_sizes": self.batch_sizes})

    def _write_json(self, name, obj):
        tmp = os.path.join(self.root, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, os.path.join(self.root, name))

    def _path(self, name, start):
        return os.path.join(self.root, name, f"{start:08d}.npz")

    def load(self, name: str, start: int, size: int):
        path = self._path(name, start)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path) as z:
                scores = z["scores"]
                probs = [z[f"probs_{i}"] for i in range(len(z.files) - 1)]
        except Exception:  # noqa: BLE001 - an unreadable cell is recomputed
            return None
        return (scores, probs) if len(scores) == size else None

    def save(self, name: str, start: int, scores, probs) -> None:
        path = self._path(name, start)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path[:-4] + ".tmp.npz"
        np.savez(tmp, scores=scores, **{f"probs_{i}": p for i, p in enumerate(probs)})
        os.replace(tmp, path)


def _available_bytes() -> float:
    """Free memory of the default device (GPU/TPU), or the host's available memory."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
        free = stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0)
        if free > 0:
            return float(free)
    except Exception:  # noqa: BLE001 - not every backend reports memory
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


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
    budget = fraction * _available_bytes() if budget_bytes is None else budget_bytes
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
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, i), step))(idx)
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


def run(classifiers: Mapping[str, tuple[Callable, object]], images, labels=None, *,
        corruptions=("scale_up", "median_blur", "gaussian_noise"),
        levels: Mapping[str, np.ndarray] | None = None, key: jax.Array,
        class_names: Mapping[str, list[str]] | None = None, batch_size: int | None = None,
        target: str = "corruption_type", protocol: str = "continuous",
        ssim_data_range: float | None = None, limit_ssim: float | None = None,
        out_dir: str | None = None, cells_dir: str | None = None,
        devices: int | None = None, log: Callable[[str], None] = print,
        progress: bool | None = None):
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
        out_dir: if given, `results.csv` and `per_image.npz` are written there, and
            finished cells to `out_dir/sweep_cells` (see `cells_dir`).
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
        (steps, N), `clean/<model>/pred (N,)`). `clean_accuracy` is the model's
        accuracy on the clean images (labels: its labels; corruption_type: `original`;
        NaN for a model without that class): the reference of every robustness summary,
        never a sweep step (step 0 may be the identity corruption).
    """
    import pandas as pd

    images, names, schedule = _check(classifiers, images, labels, corruptions, levels, target,
                                     protocol)
    if ssim_data_range is None:
        ssim_data_range = registry.SSIM_DATA_RANGE[protocol]
    if not ssim_data_range > 0:
        raise ValueError(f"ssim_data_range must be positive, got {ssim_data_range}.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    mesh = local_mesh(devices)
    if cells_dir is None and out_dir is not None:
        cells_dir = os.path.join(out_dir, "sweep_cells")
    store = None if cells_dir is None else CellStore(cells_dir, fingerprint(
        classifiers, images, labels, names, schedule, key, target, class_names,
        ssim_data_range))
    model_names = list(classifiers)
    expected = {}
    for m in model_names:
        classes = (class_names or {}).get(m)
        for name in names:
            if target == "labels":
                expected[m, name] = np.asarray(labels, np.int32)
                continue
            if classes is None or name not in classes:
                raise ValueError(f"model {m!r} has no class {name!r} (its classes: {classes}); "
                                 "sweep with target='labels' or train it on this corruption.")
            expected[m, name] = np.full(len(images), list(classes).index(name), np.int32)
    original = {m: (list((class_names or {}).get(m) or []).index("original")
                    if "original" in ((class_names or {}).get(m) or []) else -1)
                for m in model_names}
    if limit_ssim is not None and target == "corruption_type":
        lacking = [m for m in model_names if original[m] < 0]
        if lacking:
            raise ValueError(f"limit_ssim relabels images as 'original', but model "
                             f"{lacking[0]!r} has no class 'original'; drop limit_ssim.")
    params = tuple(classifiers[m][1] for m in model_names)
    fns = tuple(classifiers[m][0] for m in model_names)
    rows, per_image = [], {}
    n = len(images)
    clean_accuracy = {}
    for m, fn, p in zip(model_names, fns, params, strict=True):
        pred = clean_predictions(fn, p, images, batch=max(1, min(n, batch_size or 64)))
        per_image[f"clean/{m}/pred"] = pred
        if target == "labels":
            clean_accuracy[m] = float(np.mean(pred == np.asarray(labels)))
        else:
            clean_accuracy[m] = float(np.mean(pred == original[m])) if original[m] >= 0 \
                else float("nan")
    for c_index, name in enumerate(names):
        kernel = registry.get(name).apply
        lv = jnp.asarray(registry.kernel_levels(name, schedule[name]))
        base = jax.random.fold_in(key, c_index)

        program = _chunk_program(kernel, fns, mesh, float(ssim_data_range))
        start = time.perf_counter()
        ndev = mesh.devices.size
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
        score = np.concatenate(scores).T  # (L, N)
        per_image[f"{name}/ssim"] = score
        for mi, m in enumerate(model_names):
            prob = np.concatenate([p[mi] for p in probs]).transpose(1, 0, 2)  # (L, N, K)
            pred = prob.argmax(-1)
            exp = np.broadcast_to(expected[m, name], pred.shape)
            if limit_ssim is not None and target == "corruption_type":
                exp = np.where(score > limit_ssim, original[m], exp).astype(np.int32)
            correct = pred == exp
            loss = np.asarray(optax.softmax_cross_entropy_with_integer_labels(
                jnp.log(jnp.maximum(prob, 1e-12)), exp))
            per_image[f"{name}/{m}/pred"] = pred.astype(np.int32)
            per_image[f"{name}/{m}/confidence"] = prob.max(-1)
            per_image[f"{name}/{m}/correct"] = correct
            per_image[f"{name}/{m}/expected"] = np.ascontiguousarray(exp)
            for step in range(len(lv)):
                rows.append({"model": m, "corruption": name, "step": step,
                             "level": float(schedule[name][step]), "n": n,
                             "accuracy": float(correct[step].mean()),
                             "ssim_mean": float(score[step].mean()),
                             "ssim_std": float(score[step].std()),
                             "confidence": float(prob[step].max(-1).mean()),
                             "loss": float(loss[step].mean()),
                             "clean_accuracy": clean_accuracy[m]})
        log(f"  sweep {name}: {len(lv)} levels x {n} images x {len(model_names)} models "
            f"in {time.perf_counter() - start:.1f} s")
    table = pd.DataFrame(rows)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        tmp = os.path.join(out_dir, ".results.csv.tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, os.path.join(out_dir, "results.csv"))
        tmp = os.path.join(out_dir, ".per_image.tmp.npz")
        np.savez_compressed(tmp, **per_image)
        os.replace(tmp, os.path.join(out_dir, "per_image.npz"))
    return table, per_image
