"""Where a sweep keeps its finished work: resumable cells and the result files.

`SweepStore` holds every finished (corruption, chunk) cell of a sweep, beside a
fingerprint of everything the results depend on (images, labels, models and their
parameters, corruptions, levels, key, target, SSIM range). A rerun on the same folder
loads the finished cells and computes only the others; a rerun with anything changed
is refused, naming what changed. `write_results` writes a sweep's table and per-image
arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from jaxrobust import _io, _progress


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


#: The cell layout; a folder written with another one is refused, not misread.
FORMAT = 2


def fingerprint(key, classifiers, data: str, names, schedule, target, class_names,
                ssim_data_range: float = 1.0, *, limit_ssim: float | None = None,
                top_k=(1,), keep_probs: bool = False, table: str = "imagenet") -> dict:
    """Short hashes of everything a sweep's results depend on, by component; `data` is
    the source's digest (`data.stream.source_digest`: images and labels); the
    corruption table when it is not the default `imagenet`."""
    extra = {} if table == "imagenet" else {"table": table}
    return {**extra,
        "format": FORMAT,
        "ssim_data_range": float(ssim_data_range),
        "images": data,
        "models": {m: _digest(*jax.tree.leaves(classifiers[m][1])) for m in classifiers},
        "class_names": {m: list((class_names or {}).get(m) or []) for m in classifiers},
        "corruptions": list(names),
        "levels": {n: _digest(schedule[n]) for n in names},
        "key": _digest(jax.random.key_data(key)),
        "target": target,
        "limit_ssim": limit_ssim,
        "records": {"top_k": [int(k) for k in top_k], "keep_probs": bool(keep_probs)},
    }


class SweepStore:
    """Finished sweep cells on disk: one `.npz` per (corruption, chunk), atomic writes.

    `root/sweep.json` holds the fingerprint (`fingerprint`) and the chunk size used per
    corruption; `root/<corruption>/<first image>.npz` holds a cell's records: `ssim
    (B, L)`, per model `m` its `m/<field> (B, L)` (`engine`'s records), and in the
    first corruption's cells the clean predictions `clean/<m> (B,)` and `labels`.

    Several processes may share one store (a shared file system): each writes only
    its own cells; process 0 alone writes `sweep.json` and removes leftovers of
    cut-off writes (at start, when it is the only process).

    Raises:
        ValueError: `root` holds a sweep whose fingerprint differs (naming what).
        PermissionError: `root` cannot be written.
    """

    def __init__(self, root: str, record: dict):
        self.root = root
        self.writer = jax.process_index() == 0
        os.makedirs(root, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise PermissionError(f"sweep folder {root} is not writable; pass another --out.")
        old = self._read_json()
        if old is not None:
            changed = [k for k in record if k != "batch_sizes" and old.get(k) != record[k]]
            if changed:
                raise ValueError(
                    f"{root} holds a sweep with other {', '.join(changed)}; refusing to mix "
                    "results. Pass another --out, or delete the folder to start afresh.")
            self.batch_sizes = dict(old.get("batch_sizes", {}))
        else:
            self.batch_sizes = {}
        self.record = record
        if jax.process_count() == 1:
            for d, _, files in os.walk(root):  # leftovers of a write that was cut off
                for f in files:
                    if ".tmp" in f:
                        os.remove(os.path.join(d, f))

    def _read_json(self):
        path = os.path.join(self.root, "sweep.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def fix_batch_size(self, name: str, batch_size: int | None) -> int | None:
        """The chunk size used for `name` before (a rerun keeps it), else `batch_size`."""
        before = self.batch_sizes.get(name)
        if before is not None and batch_size is not None and before != batch_size:
            raise ValueError(f"{self.root} was swept with batch_size {before} for {name}; "
                             f"rerun with the same batch size (got {batch_size}) or another "
                             "--out.")
        return before if before is not None else batch_size

    def wait_batch_size(self, name: str, timeout: float) -> int:
        """The chunk size process 0 chose for `name` (several processes), once it has
        written it to `sweep.json`."""
        deadline = time.monotonic() + timeout
        while True:
            size = (self._read_json() or {}).get("batch_sizes", {}).get(name)
            if size is not None:
                self.batch_sizes[name] = size
                return int(size)
            if time.monotonic() > deadline:
                raise TimeoutError(f"process 0 has not chosen the chunk size for {name} in "
                                   f"{self.root} after {timeout:g} s; is it running with the "
                                   "same --out? (or give every process --set sweep.batch_size=B)")
            time.sleep(0.2)

    def remember(self, name: str, batch_size: int) -> None:
        self.batch_sizes[name] = batch_size
        if self.writer:
            self._write_json("sweep.json", {**self.record, "batch_sizes": self.batch_sizes})

    def _write_json(self, name, obj):
        _io.write_json(os.path.join(self.root, name), obj)

    def _path(self, name, start):
        return os.path.join(self.root, name, f"{start:08d}.npz")

    def load(self, name: str, start: int, size: int) -> dict | None:
        """The cell of `name` starting at image `start`, if it is whole, else None."""
        path = self._path(name, start)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path) as z:
                cell = {k: z[k] for k in z.files}
        except Exception:  # noqa: BLE001 - an unreadable cell is recomputed
            return None
        whole = cell and all(len(v) == size for v in cell.values())  # images lead
        return cell if whole else None

    def save(self, name: str, start: int, cell: dict) -> None:
        path = self._path(name, start)
        with _io.atomic_path(path) as tmp:
            np.savez(tmp, **cell)

    def wait_cells(self, name: str, cells, owners, done: dict, *, timeout: float,
                   log=print) -> dict:
        """`done` completed with every cell of `cells` (`(start, end)`), loaded as the
        processes that own them (`owners`) write them; an error naming the missing
        cells' processes after `timeout` seconds without a new one."""
        done = dict(done)
        last = time.monotonic()
        waiting = False
        while True:
            missing = [(j, g, e) for j, (g, e) in enumerate(cells) if g not in done]
            for _, g, e in missing:
                cell = self.load(name, g, e - g)
                if cell is not None:
                    done[g] = cell
                    last = time.monotonic()
            missing = [(j, g) for j, g, _ in missing if g not in done]
            if not missing:
                return done
            if not waiting:
                log(f"{name}: waiting for {len(missing)} cells of processes "
                    f"{sorted({owners[j] for j, _ in missing})}")
                waiting = True
            if time.monotonic() - last > timeout:
                raise TimeoutError(
                    f"{self.root}: no new {name} cell for {timeout:g} s; processes "
                    f"{sorted({owners[j] for j, _ in missing})} have {len(missing)} cells to "
                    "write. Rerun their command (it resumes), then this one.")
            time.sleep(0.2)


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    """`a` with its last row repeated up to `size` rows (what a short chunk computes)."""
    return a if len(a) == size else np.concatenate([a, np.repeat(a[-1:], size - len(a), 0)])


def run_cells(name: str, n: int, size: int, devices: int, read, compute, *,
              store: SweepStore | None, pool=None, units: int = 1, desc: str = "",
              unit: str = "img", wait_timeout: float = 3600.0, log=print,
              progress: bool | None = None) -> list[dict]:
    """Every cell (`size` consecutive images of `n`) of one job, computed or resumed;
    the one loop behind the streamed sweep and the streamed attributions.

    The cells are split into one contiguous block per process (`jax.process_count()`;
    one block with one process). This process loads its finished cells from `store`,
    reads the others' images `devices` cells at a time (`read(indices) -> (images,
    labels)`, the next batch read on `pool`'s thread while the current one computes),
    and calls `compute(idx, rows, images, labels, sizes) -> [cell dict per cell]`:
    `idx` the batch's image indices, `rows` `(size x devices,)` positions into
    `images` that pad each cell to `size` rows (its last image repeated) and the batch
    to `devices` cells, so every device always gets `size` consecutive images and
    each image meets the same computation whatever the device or process count;
    `sizes` the cells' true lengths. New cells are saved to `store` as they finish.
    With several processes, the others' cells are then waited for in `store`
    (`SweepStore.wait_cells`).

    Returns:
        The `n`'s cells in image order (each a dict of arrays with the cell's images
        as leading axis).
    """
    nproc, proc = jax.process_count(), jax.process_index()
    if nproc > 1 and store is None:
        raise ValueError("a job over several processes needs a cells folder (cells_dir, "
                         "--out) that every process can write.")
    cells = [(g, min(n, g + size)) for g in range(0, n, size)]
    owners = [j * nproc // len(cells) for j in range(len(cells))]
    mine = [c for c, o in zip(cells, owners, strict=True) if o == proc]
    done, todo = {}, []
    for g, e in mine:
        cell = None if store is None else store.load(name, g, e - g)
        if cell is None:
            todo.append((g, e))
        else:
            done[g] = cell
    batches = [todo[i:i + devices] for i in range(0, len(todo), devices)]
    bar = _progress.bar(total=sum(e - g for g, e in mine) * units, desc=desc, unit=unit,
                        unit_scale=True, progress=progress)
    if done:
        bar.set_postfix(resumed=f"{len(done)} chunks", refresh=False)
        bar.update(sum(e - g for g, e in mine if g in done) * units)

    def fetch(batch):
        return read(np.concatenate([np.arange(g, e) for g, e in batch]))

    own_pool = pool is None
    pool = ThreadPoolExecutor(1) if own_pool else pool
    try:
        pending = pool.submit(fetch, batches[0]) if batches else None
        for b, batch in enumerate(batches):
            images, labels = pending.result()
            if b + 1 < len(batches):
                pending = pool.submit(fetch, batches[b + 1])
            idx = np.concatenate([np.arange(g, e) for g, e in batch])
            sizes = [e - g for g, e in batch]
            bounds = np.cumsum([0, *sizes])
            rows = np.concatenate([np.minimum(np.arange(size), k - 1) + bounds[j]
                                   for j, k in enumerate(sizes)])
            rows = _pad(rows, size * devices)
            for (g, _), cell in zip(batch, compute(idx, rows, images, labels, sizes),
                                    strict=True):
                done[g] = cell
                if store is not None:
                    store.save(name, g, cell)
            bar.update(int(bounds[-1]) * units)
    finally:
        bar.close()
        if own_pool:
            pool.shutdown()
    if len(done) > len(todo):
        log(f"{name}: {len(done) - len(todo)} chunks resumed")
    if nproc > 1:  # the other processes' cells, as they write them
        done = store.wait_cells(name, cells, owners, done, timeout=wait_timeout, log=log)
    return [done[g] for g, _ in cells]


def write_results(out_dir: str, table, per_image: dict) -> None:
    """Writes `results.csv` (the table) and `per_image.npz` into `out_dir`, each whole."""
    os.makedirs(out_dir, exist_ok=True)
    with _io.atomic_path(os.path.join(out_dir, "results.csv")) as tmp:
        table.to_csv(tmp, index=False)
    with _io.atomic_path(os.path.join(out_dir, "per_image.npz")) as tmp:
        np.savez_compressed(tmp, **per_image)
