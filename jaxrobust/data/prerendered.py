"""Pre-rendered corruption benchmarks as data sources: the files people download.

Two layouts, as Hendrycks' generators wrote them:

* `cifar10c:PATH` (CIFAR-10-C, CIFAR-100-C): `PATH/<corruption>.npy`, `(5 N, H, W, 3)`
  uint8, the N test images at severity 1, then at 2, .. 5; `PATH/labels.npy`, `(5 N,)`.
* `imagenetc:PATH` (ImageNet-C, Tiny-ImageNet-C, ImageNet 64x64-C):
  `PATH/<corruption>/<severity>/<class>/<image>` (JPEG), classes numbered in sorted
  order as torchvision's `ImageFolder` numbers them.

`open_prerendered(spec)` checks the layout up front (shapes, `labels.npy`, every
severity folder) and gives each (corruption, severity) as a lazy source: `len()` and
`[indices] -> (uint8 images, labels)`, read when the sweep reads them.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxrobust import corruptions

LAYOUTS = ("cifar10c", "imagenetc")
SEVERITIES = (1, 2, 3, 4, 5)


def _corruption_name(stem: str) -> str | None:
    try:
        return corruptions.get(stem).name
    except ValueError:
        return None


def _ordered(names):
    order = list(corruptions.IMAGENET_C) + list(corruptions.IMAGENET_C_VALIDATION)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


@dataclasses.dataclass
class PrerenderedSet:
    """A pre-rendered benchmark on disk (`open_prerendered`).

    Attributes:
        layout: `cifar10c` or `imagenetc`.
        root: its folder.
        files: corruption name -> its `.npy` file or its folder.
        class_names: the classes in label order (`imagenetc`), or None.
    """

    layout: str
    root: str
    files: dict
    class_names: tuple[str, ...] | None = None
    image_size: int | None = None
    channels: int = 3

    @property
    def corruptions(self) -> list[str]:
        return list(self.files)

    def source(self, corruption: str, severity: int):
        """The images of `corruption` at `severity` (1..5) as a lazy source."""
        from jaxrobust.data.stream import ArraySource, FolderSource

        name = corruptions.get(corruption).name
        if name not in self.files:
            raise ValueError(f"{self.layout}:{self.root} has no {name} (it has "
                             f"{', '.join(self.files)}).")
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of 1..5, got {severity}.")
        if self.layout == "cifar10c":
            images = np.load(self.files[name], mmap_mode="r")
            labels = np.load(os.path.join(self.root, "labels.npy"))
            n = len(images) // 5
            part = slice((severity - 1) * n, severity * n)
            return ArraySource(images[part], np.asarray(labels[part], np.int32))
        folder = os.path.join(self.files[name], str(severity))
        src = FolderSource(folder, image_size=self.image_size, channels=self.channels)
        if src.class_names != self.class_names:
            missing = sorted(set(self.class_names) - set(src.class_names))
            raise ValueError(f"{folder} has other classes than "
                             f"{os.path.join(self.files[self.corruptions[0]], '1')}"
                             f" (missing: {', '.join(missing[:5]) or 'none'}); every "
                             "severity folder must hold the same class folders.")
        return src


def _open_cifar(root: str) -> PrerenderedSet:
    labels_path = os.path.join(root, "labels.npy")
    if not os.path.isfile(labels_path):
        raise ValueError(f"{labels_path} is missing: a CIFAR-10-C folder holds "
                         "<corruption>.npy files and their labels.npy.")
    try:
        labels = np.load(labels_path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise ValueError(f"{labels_path}: cannot read ({e}).") from None
    if labels.ndim != 1 or len(labels) % 5 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{labels_path}: shape {labels.shape} {labels.dtype}; labels.npy "
                         "holds 5 x N integer labels (severities 1-5 stacked).")
    files = {}
    for entry in sorted(os.listdir(root)):
        stem, ext = os.path.splitext(entry)
        name = _corruption_name(stem) if ext == ".npy" and stem != "labels" else None
        if name is None:
            continue
        path = os.path.join(root, entry)
        try:
            images = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read ({e}).") from None
        if (images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8
                or len(images) != len(labels)):
            raise ValueError(f"{path}: shape {images.shape} {images.dtype}; a CIFAR-10-C file "
                             f"holds {len(labels)} uint8 images (H, W, 3) (severities 1-5 "
                             f"stacked, one per entry of labels.npy).")
        files[name] = path
    if not files:
        raise ValueError(f"cifar10c:{root} has no <corruption>.npy file (e.g. "
                         "gaussian_noise.npy).")
    return PrerenderedSet("cifar10c", root, {n: files[n] for n in _ordered(files)})


def _open_imagenet(root: str, image_size: int | None, channels: int) -> PrerenderedSet:
    from jaxrobust.data.sources import IMAGE_EXTENSIONS

    files = {}
    for entry in sorted(os.listdir(root)):
        name = _corruption_name(entry)
        if name is not None and os.path.isdir(os.path.join(root, entry)):
            files[name] = os.path.join(root, entry)
    if not files:
        raise ValueError(f"imagenetc:{root} has no <corruption> folder (e.g. "
                         "gaussian_noise/1/<class>/*.JPEG).")
    classes = None
    for folder in files.values():
        for s in SEVERITIES:
            sub = os.path.join(folder, str(s))
            if not os.path.isdir(sub):
                raise ValueError(f"{sub} is missing: an ImageNet-C tree holds "
                                 "<corruption>/1 .. 5/<class>/<image> for every corruption.")
            if classes is None:
                classes = tuple(sorted(d for d in os.listdir(sub)
                                       if os.path.isdir(os.path.join(sub, d))))
                if not classes:
                    raise ValueError(f"{sub} has no class folders (<class>/<image>).")
    first = os.path.join(next(iter(files.values())), "1", classes[0])
    if image_size is None:  # the images' own size, from the first one
        from jaxrobust.data.sources import read_image

        some = sorted(f for f in os.listdir(first) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not some:
            raise ValueError(f"{first} has no image files.")
        image_size = int(read_image(os.path.join(first, some[0])).shape[0])
    return PrerenderedSet("imagenetc", root, {n: files[n] for n in _ordered(files)},
                          class_names=classes, image_size=image_size, channels=channels)


def open_prerendered(spec: str, *, image_size: int | None = None,
                     channels: int = 3) -> PrerenderedSet:
    """A pre-rendered benchmark from `cifar10c:PATH` or `imagenetc:PATH`.

    Args:
        spec: the layout and folder.
        image_size, channels: `imagenetc` images are converted as `folder:` sources
            convert them (gray or RGB, anti-aliased resize to `image_size` square, 8
            bits); default: the images' own size.

    Raises:
        ValueError: an unknown layout, a missing folder or `labels.npy`, a `.npy` of the
            wrong shape, or a missing severity folder; the message names the file.
    """
    layout, sep, path = spec.partition(":")
    if not sep or layout not in LAYOUTS:
        raise ValueError(f"unknown pre-rendered set {spec!r}; use cifar10c:PATH or "
                         "imagenetc:PATH.")
    root = os.path.expanduser(path)
    if not os.path.isdir(root):
        raise ValueError(f"{layout}:{root} does not exist or is not a folder.")
    if layout == "cifar10c":
        return _open_cifar(root)
    return _open_imagenet(root, image_size, channels)
