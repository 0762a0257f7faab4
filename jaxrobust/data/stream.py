"""Indexable data sources: images read on demand, a chunk at a time.

A source is any object with `len(source)` and `source[indices] -> (images, labels)`,
`indices` a 1-D int array: `images` `(B, H, W, C)` uint8 (0-255) or float in [0, 1],
`labels` `(B,)` ints or None. `sweep.run` takes one in place of an array and reads only
the chunks it is computing (and the next, prefetched on a host thread).

Here: `ArraySource` (NumPy arrays, `numpy.memmap` included: only the rows asked for are
read), `ElementSource` (element-wise sources such as tfds' `data_source` or a grain
`MapDataset`, whose items are dicts or `(image, label)` pairs), `FolderSource` (the
`folder:` layout, each file read, resized and quantised when asked for) and
`source_digest` (what the sweep's resume fingerprint takes of a source).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np


def as_source(images, labels=None):
    """`images` as a data source: arrays (NumPy, JAX, a `numpy.memmap` too) are wrapped
    in an `ArraySource`; an object with `len()` and `__getitem__(indices) -> (images,
    labels)` is taken as it is (then `labels` must be None: the source returns them).

    Raises:
        ValueError: neither, or labels passed beside a source.
    """
    import jax

    if isinstance(images, np.ndarray | jax.Array | list | tuple):
        return ArraySource(images, labels)
    if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
        raise ValueError(f"images must be an (N, H, W, C) array or a data source with len() "
                         f"and __getitem__(indices) -> (images, labels), got "
                         f"{type(images).__name__}.")
    if labels is not None:
        raise ValueError("a data source returns its own labels; pass labels=None.")
    return images


class ArraySource:
    """`(images, labels)` arrays as a source: `source[idx]` is `images[idx], labels[idx]`."""

    def __init__(self, images, labels=None):
        self.images = images if isinstance(images, np.ndarray) else np.asarray(images)
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels; pass "
                             "one label per image.")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx):
        idx = np.asarray(idx)
        return self.images[idx], (None if self.labels is None else self.labels[idx])


class ElementSource:
    """An element-wise source (`source[i]` one example) read in batches.

    Args:
        source: `len()` and `__getitem__(int)` (tfds' `data_source`, a grain
            `MapDataset`), each item a dict or an `(image, label)` pair.
        image_key, label_key: the dict keys (tfds: `image`, `label`); `label_key=None`
            for unlabelled data.
        transform: applied to each image (an `(H, W[, C])` array) before the batch is
            stacked, e.g. a resize for images of several sizes.
    """

    def __init__(self, source, image_key: str = "image", label_key: str | None = "label",
                 transform=None):
        self.source, self.image_key, self.label_key = source, image_key, label_key
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, idx):
        idx = [int(i) for i in np.asarray(idx)]
        items = [self.source[i] for i in idx]
        if items and isinstance(items[0], dict):
            images = [np.asarray(it[self.image_key]) for it in items]
            labels = None if self.label_key is None else [it[self.label_key] for it in items]
        else:
            images = [np.asarray(it[0]) for it in items]
            labels = None if self.label_key is None else [it[1] for it in items]
        images = [im[..., None] if im.ndim == 2 else im for im in images]
        if self.transform is not None:
            images = [self.transform(im) for im in images]
        images = np.stack(images)
        return images, None if labels is None else np.asarray(labels)


class FolderSource:
    """The `folder:PATH` layout, read lazily: file names and labels are listed once,
    pixels are read (and converted as `data.load_folder` converts them: gray or RGB,
    anti-aliased resize to `image_size`, 8-bit) only for the indices asked for.

    An unreadable file stops the read with one error naming it (a lazy source cannot
    skip it: the image count is fixed up front).
    """

    def __init__(self, root: str, *, image_size: int, channels: int = 1):
        from jaxrobust.data import sources

        if not os.path.isdir(root):
            raise ValueError(f"folder:{root} does not exist or is not a folder.")
        self.paths = sorted(os.path.join(d, f) for d, _, files in os.walk(root)
                            for f in files if f.lower().endswith(sources.IMAGE_EXTENSIONS)
                            and not f.startswith("."))
        if not self.paths:
            raise ValueError(f"folder:{root} has no image files; put images in it (class "
                             "from sub-folder names or from the file-name prefix).")
        names = [sources._label_of(root, p) for p in self.paths]
        self.class_names = tuple(sorted(set(names)))
        self.labels = np.asarray([self.class_names.index(n) for n in names], np.int32)
        self.root, self.image_size, self.channels = root, image_size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx):
        from jaxrobust.data import sources

        idx = np.asarray(idx)
        images = []
        for i in idx:
            try:
                images.append(sources.prepare_image(sources.read_image(self.paths[i]),
                                                    self.image_size, self.channels))
            except ValueError as e:
                raise ValueError(f"{self.paths[i]}: {e}; remove it from folder:{self.root}.") \
                    from None
        return (np.round(np.clip(np.asarray(images), 0, 1) * 255).astype(np.uint8),
                self.labels[idx])


def to_float(images):
    """uint8 images (0-255) as float32 in [0, 1], on device; float ones as float32.

    uint8 goes through a 256-entry table of `float32(k / 255)`, so the values equal
    the host's `(k / 255).astype(float32)` bit for bit (XLA may turn a division by a
    constant into a multiplication, one ulp off)."""
    import jax.numpy as jnp

    if images.dtype == jnp.uint8:
        return jnp.asarray(np.arange(256) / 255.0, jnp.float32)[images]
    return images.astype(jnp.float32)


def source_digest(source, *, samples: int = 16) -> str:
    """A short hash of a source for the resume fingerprint: in-memory arrays whole;
    any other source (memmap, files, tfds) by its length and `samples` evenly spaced
    items, so that fingerprinting does not read the whole data set."""
    h = hashlib.sha256()
    n = len(source)
    whole = isinstance(source, ArraySource) and not isinstance(source.images, np.memmap)
    idx = np.arange(n) if whole else np.unique(np.linspace(0, n - 1, min(samples, n)).astype(int))
    images, labels = source[idx]
    h.update(f"{n}".encode())
    for a in (images, np.zeros(0) if labels is None else labels):
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def checked_reader(source, *, num_classes: int | None = None, labelled: bool | None = None):
    """`read(indices) -> (images, labels)` over `source`, each chunk checked by
    `check_chunk` against the first one read (shape and dtype)."""
    like = []

    def read(idx):
        images, labels = source[idx]
        images, labels = check_chunk(images, labels, idx, like=like[0] if like else None,
                                     num_classes=num_classes, labelled=labelled)
        if not like:
            like.append((images.shape[1:], images.dtype))
        return images, labels

    return read


def check_chunk(images, labels, idx: Sequence[int], *, like: tuple | None,
                num_classes: int | None, labelled: bool | None):
    """`(images, labels)` as the sweep takes them, or one error naming the problem.

    `like`: the `(H, W, C)` and dtype every chunk must have (the first chunk's);
    `num_classes`: labels must lie in `[0, num_classes)`; `labelled`: whether labels
    must be present (True), absent (False) or either (None).
    """
    images = np.asarray(images)
    where = f"the data source's items {int(idx[0])}..{int(idx[-1])}"
    if images.ndim != 4 or len(images) != len(idx):
        raise ValueError(f"{where}: __getitem__ returned images of shape {images.shape}; a "
                         f"source returns ({len(idx)}, H, W, C) for {len(idx)} indices.")
    if images.dtype != np.uint8 and images.dtype.kind != "f":
        raise ValueError(f"{where}: images of dtype {images.dtype}; a source returns uint8 "
                         "(0-255) or float images in [0, 1].")
    if images.dtype.kind == "f" and images.size and (images.min() < 0 or images.max() > 1
                                                     or not np.isfinite(images).all()):
        raise ValueError(f"{where}: float images outside [0, 1]; scale them to [0, 1] (or "
                         "return uint8).")
    if like is not None and (images.shape[1:], images.dtype) != like:
        raise ValueError(f"{where}: images {images.shape[1:]} {images.dtype}, the first chunk "
                         f"had {like[0]} {like[1]}; every item must have the same shape and "
                         "dtype.")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(idx),) or labels.dtype.kind not in "iu":
            raise ValueError(f"{where}: labels of shape {labels.shape} and dtype "
                             f"{labels.dtype}; a source returns ({len(idx)},) integer labels.")
        if num_classes is not None and len(labels) and (labels.min() < 0
                                                        or labels.max() >= num_classes):
            raise ValueError(f"{where}: labels out of range [0, {num_classes}) (found "
                             f"{labels.min()}..{labels.max()}); the classifiers have "
                             f"{num_classes} classes.")
        labels = labels.astype(np.int32)
    if labelled and labels is None:
        raise ValueError(f"{where}: no labels, and target='labels' needs them; return "
                         "(images, labels).")
    return images, labels


def open_source(spec: str, *, image_size: int, channels: int = 1):
    """A lazy source from a command-line spec: `(source, class_names or None)`.

    - `folder:PATH` — `FolderSource` (labels from sub-folders or file-name prefixes);
    - `npy:IMAGES.npy[,LABELS.npy]` — a `(N, H, W, C)` (or `(N, H, W)`) uint8 or float
      array opened as a `numpy.memmap`, labels optional;
    - `tfds:NAME[/SPLIT]` — a prepared TensorFlow Datasets set through
      `tfds.data_source` (no TensorFlow, no download), images resized to `image_size`.

    Raises:
        ValueError: an unknown kind or a missing / unreadable file.
    """
    if spec.startswith("folder:"):
        src = FolderSource(os.path.expanduser(spec[7:]), image_size=image_size,
                           channels=channels)
        return src, list(src.class_names)
    if spec.startswith("npy:"):
        paths = [os.path.expanduser(p) for p in spec[4:].split(",")]
        try:
            images = np.load(paths[0], mmap_mode="r")
            labels = np.load(paths[1]) if len(paths) > 1 else None
        except (OSError, ValueError) as e:
            raise ValueError(f"{spec}: cannot open ({e}); pass npy:IMAGES.npy[,LABELS.npy].") \
                from None
        if images.ndim == 3:
            images = images[..., None]
        return ArraySource(images, labels), None
    if spec.startswith("tfds:"):
        name, _, split = spec[5:].partition("/")
        return tfds_source(name, split=split or "test", image_size=image_size,
                           channels=channels)
    raise ValueError(f"unknown streamed source {spec!r}; use folder:PATH, "
                     "npy:IMAGES.npy[,LABELS.npy] or tfds:NAME[/SPLIT].")


def tfds_source(name: str, *, split: str, image_size: int, channels: int = 1,
                data_dir: str | None = None):
    """A prepared TensorFlow Datasets set as a lazy source, `(source, class names)`:
    `tfds.data_source` (no TensorFlow, nothing downloaded), each image converted as
    `folder:` images are (gray or RGB, anti-aliased resize, 8-bit) when read.

    Raises:
        ValueError: tensorflow-datasets missing, or the set not prepared in `data_dir`.
    """
    from jaxrobust.data import sources

    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ValueError(f"tfds:{name} needs tensorflow-datasets: "
                         "pip install tensorflow-datasets") from e
    try:
        items = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        names = list(tfds.builder(name, data_dir=data_dir).info.features["label"].names)
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds for "not prepared"
        raise ValueError(f"tfds:{name} is not available locally ({type(e).__name__}: {e}); "
                         "prepare it first with tfds.builder(name).download_and_prepare().") \
            from None

    def convert(image):
        out = sources.prepare_image(image / 255.0, image_size, channels)
        return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)

    return ElementSource(items, transform=convert), names
