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

import jax
import numpy as np

from jaxrobust import _io


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def fingerprint(key, classifiers, images, labels, names, schedule, target, class_names,
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


class SweepStore:
    """Finished sweep cells on disk: one `.npz` per (corruption, chunk), atomic writes.

    `root/sweep.json` holds the fingerprint (`fingerprint`) and the chunk size used per
    corruption; `root/<corruption>/<first image>.npz` holds a cell's SSIMs `(B, L)` and
    every model's probabilities `(B, L, K)`.

    Raises:
        ValueError: `root` holds a sweep whose fingerprint differs (naming what).
        PermissionError: `root` cannot be written.
    """

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
        _io.write_json(os.path.join(self.root, name), obj)

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
        with _io.atomic_path(path) as tmp:
            np.savez(tmp, scores=scores, **{f"probs_{i}": p for i, p in enumerate(probs)})


def write_results(out_dir: str, table, per_image: dict) -> None:
    """Writes `results.csv` (the table) and `per_image.npz` into `out_dir`, each whole."""
    os.makedirs(out_dir, exist_ok=True)
    with _io.atomic_path(os.path.join(out_dir, "results.csv")) as tmp:
        table.to_csv(tmp, index=False)
    with _io.atomic_path(os.path.join(out_dir, "per_image.npz")) as tmp:
        np.savez_compressed(tmp, **per_image)
