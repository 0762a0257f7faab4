"""Files appear whole or not at all: the one place that moves files into place.

Every file jaxrobust writes goes through `atomic_path` (one file) or `publish` (a set
of files that appear together), so an interrupted or failed write never leaves a
half-written file under its final name. Temporary names contain `.tmp`, which is how
`SweepStore` recognises and removes leftovers of a cut-off run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path beside `path` (same extension); moves it to `path` when
    the block ends without error, and removes it otherwise."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json(path: str, obj, *, indent: int = 2) -> None:
    """Writes `obj` as JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=indent))


@contextlib.contextmanager
def publish(out_dir: str):
    """Yields a temporary folder inside `out_dir`; its files are moved into `out_dir`
    only when the block ends without error, so they appear together, and a failure
    leaves none of them behind."""
    tmp = tempfile.mkdtemp(prefix=".publish-", suffix=".tmp", dir=out_dir)
    try:
        yield tmp
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def new_folder(out_dir: str):
    """Yields a temporary folder beside `out_dir` that becomes `out_dir` (which must be
    absent or empty) when the block ends without error; removed otherwise."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"output folder {out_dir} is not empty; pass another --out "
                              "or remove it.")
    tmp = tempfile.mkdtemp(prefix=".jaxrobust-", suffix=".tmp", dir=parent)
    try:
        yield tmp
        if os.path.exists(out_dir):
            os.rmdir(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
