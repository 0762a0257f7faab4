"""Image sources: a folder of files, scikit-learn's digits, a synthetic ultrasound
phantom, and TensorFlow Datasets. Each returns a `Dataset` of float32 images
`(N, H, W, C)` in [0, 1], integer labels and class names.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images with labels. `images`: float32 `(N, H, W, C)` in [0, 1]; `labels`: int32 `(N,)`."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self):
        if self.images.ndim != 4:
            raise ValueError(f"{self.source}: images must be (N, H, W, C), "
                             f"got {self.images.shape}.")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{self.source}: {len(self.images)} images but "
                             f"{len(self.labels)} labels.")
        if not np.all(np.isfinite(self.images)):
            raise ValueError(f"{self.source}: images contain NaN or inf values.")


def quantize(images: np.ndarray) -> np.ndarray:
    """Rounds float images in [0, 1] to the 256 levels `k / 255` (the study's uint8 pipeline)."""
    return (np.round(np.clip(images, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    return resize(image, (size, size) + image.shape[2:], order=1, anti_aliasing=True,
                  preserve_range=True)


def _linear_axis(n_in: int, n_out: int):
    # cv2's INTER_LINEAR source coordinate, clamped to the image (no anti-aliasing)
    u = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(u).astype(np.int64)
    return lo, np.minimum(lo + 1, n_in - 1), u - lo


def resize_linear(image: np.ndarray, size: int) -> np.ndarray:
    """`cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)` in NumPy.

    Bilinear with half-pixel centres and edge clamping, no anti-aliasing when it
    shrinks (cv2's rule). `image`: `(H, W)` or `(H, W, C)` float; float64 out. Agrees
    with cv2 to about 1e-6 (cv2 rounds its weights to float32).
    """
    image = np.asarray(image, np.float64)
    y0, y1, fy = _linear_axis(image.shape[0], size)
    x0, x1, fx = _linear_axis(image.shape[1], size)
    shape = (-1, 1) + (1,) * (image.ndim - 2)
    rows = image[y0] * (1 - fy).reshape(shape) + image[y1] * fy.reshape(shape)
    shape = (1, -1) + (1,) * (image.ndim - 2)
    return rows[:, x0] * (1 - fx).reshape(shape) + rows[:, x1] * fx.reshape(shape)


def read_image_as_study(path: str, size: int) -> np.ndarray:
    """One file loaded as the corruption study loaded it: `(size, size, 1)` float64.

    `skimage.io.imread(path, as_gray=True)` (colour files become float64 gray through
    `rgb2gray`; a gray 8-bit file, which `imread` leaves as integers, is scaled to
    [0, 1] here so that every image is on the study's float scale), then
    `cv2.resize(..., (size, size))` with INTER_LINEAR (`resize_linear`), and no 8-bit
    re-quantisation.

    Raises:
        ValueError: unreadable file, or NaN / inf pixels.
    """
    from skimage import io

    try:
        image = np.asarray(io.imread(path, as_gray=True))
    except Exception as e:  # noqa: BLE001 - every reader error means "unreadable"
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from None
    if image.dtype.kind in "ui":
        image = image / float(np.iinfo(image.dtype).max)
    if image.ndim == 3:  # RGBA, or a stack: as_gray only converts RGB(A)
        raise ValueError(f"not a gray or RGB picture (array of shape {image.shape})")
    image = resize_linear(image.astype(np.float64), size)
    if not np.all(np.isfinite(image)):
        raise ValueError("contains NaN or inf pixels")
    return image[..., None]


# ------------------------------------------------------------------ folder


def _label_of(root: str, path: str) -> str:
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if len(parts) > 1:
        return parts[0]  # sub-folder layout: root/<class>/<file>
    stem = os.path.splitext(parts[0])[0]
    return stem.split("_")[0] if "_" in stem else stem  # the study's layout: BPD_001.png


def read_image(path: str) -> np.ndarray:
    """One image file as a float64 `(H, W, C)` array in [0, 1], C 1 (gray) or 3 (RGB).

    Integer images are divided by their dtype's maximum, RGBA is composited on white.

    Raises:
        ValueError: unreadable file, or NaN / inf pixels; the message says which.
    """
    from skimage import color, io

    try:
        image = np.asarray(io.imread(path))
    except Exception as e:  # noqa: BLE001 - every reader error means "unreadable"
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from None
    if image.ndim == 3 and image.shape[-1] == 4:
        image = color.rgba2rgb(image)
    if image.dtype.kind in "ui":
        image = image / float(np.iinfo(image.dtype).max)
    image = image.astype(np.float64)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"not a gray or RGB picture (array of shape {image.shape})")
    if not np.all(np.isfinite(image)):
        raise ValueError("contains NaN or inf pixels")
    return image


def prepare_image(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """A `read_image` array as `folder:` sources give it (before 8-bit quantisation):
    gray (`channels=1`, skimage's `rgb2gray`) or RGB (gray repeated), resized
    anti-aliased to `size` square."""
    from skimage import color

    if channels == 1 and image.shape[-1] == 3:
        image = color.rgb2gray(image)[..., None]
    elif channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return _resize(image, size)


def load_folder(root: str, *, image_size: int, channels: int = 1, strict: bool = False,
                log=print, protocol: str = "continuous") -> Dataset:
    """Every image file under `root`, labelled by sub-folder or by file-name prefix.

    Files are read with scikit-image, converted to grayscale (`channels=1`) or RGB
    (`channels=3`), resized to `image_size` square (anti-aliased) and re-quantised to 8
    bits. With `protocol="study"` they are loaded as the study did instead
    (`read_image_as_study`: gray float, cv2-style linear resize, no quantisation),
    then repeated to `channels` as its `cv2.merge` did.
    Unreadable and non-image files are reported by name: skipped with a warning, or
    an error with `strict=True`.

    Raises:
        ValueError: missing or empty folder, no readable images, a strict failure.
    """

    if not os.path.isdir(root):
        raise ValueError(f"folder:{root} does not exist or is not a folder.")
    paths = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files
                   if not f.startswith("."))
    if not paths:
        raise ValueError(f"folder:{root} is empty; put image files in it "
                         "(class from sub-folder names or from the file-name prefix).")
    images, names, problems = [], [], []
    for path in paths:
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            problems.append((path, "not an image file (by extension)"))
            continue
        try:
            image = (read_image_as_study(path, image_size) if protocol == "study"
                     else read_image(path))
        except ValueError as e:
            problems.append((path, str(e)))
            continue
        if protocol == "study":
            images.append(np.repeat(image, channels, axis=-1))
            names.append(_label_of(root, path))
            continue
        images.append(prepare_image(image, image_size, channels))
        names.append(_label_of(root, path))
    for path, why in problems:
        if strict:
            raise ValueError(f"{path}: {why}; remove it or run without --strict to skip it.")
        warnings.warn(f"skipping {path}: {why}", stacklevel=2)
        log(f"warning: skipping {path}: {why}")
    if not images:
        raise ValueError(f"folder:{root} has no readable images ({len(problems)} files skipped).")
    subfolders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                        and not d.startswith("."))
    empty = [d for d in subfolders if d not in names]
    if empty:
        raise ValueError(f"folder:{root}: class {empty[0]!r} has no readable images; add images "
                         "to it or remove the sub-folder.")
    class_names = tuple(sorted(set(names)))
    labels = np.asarray([class_names.index(n) for n in names], np.int32)
    images = np.asarray(images)
    images = images.astype(np.float32) if protocol == "study" else quantize(images)
    return Dataset(images, labels, class_names, f"folder:{root}")


# ------------------------------------------------------------------ digits


DIGITS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.npz")


def load_digits(*, image_size: int = 28) -> Dataset:
    """The 1797 8x8 handwritten digits scikit-learn bundles, upscaled to `image_size`.

    Shipped inside jaxrobust (`digits.npz`, 8x8 counts 0..16 and labels, the same
    arrays as `sklearn.datasets.load_digits()`, tested), so the `digits` source needs
    no extra package. Data: the UCI "Optical Recognition of Handwritten Digits" test
    set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0).
    """
    with np.load(DIGITS_FILE) as z:
        small, labels = z["images"] / 16.0, z["labels"].astype(np.int32)
    images = np.stack([_resize(im, image_size) for im in small])[..., None]
    return Dataset(quantize(images), labels, tuple(str(d) for d in range(10)), "digits")


# ------------------------------------------------------------------ phantom

PHANTOM_CLASSES = ("head", "abdomen", "femur")


def _phantom_image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    from scipy import ndimage

    yy, xx = np.mgrid[0:size, 0:size] / size
    # Sector-shaped field of view with the probe at the top centre.
    dx, dy = xx - 0.5, yy + 0.08
    radius, angle = np.hypot(dx, dy), np.arctan2(dx, dy)
    half_angle = rng.uniform(0.55, 0.7)
    fov = (np.abs(angle) < half_angle) & (radius > 0.12) & (radius < 1.02)
    tissue = 0.35 + 0.1 * ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 12)
    cy, cx = rng.uniform(0.45, 0.6), rng.uniform(0.4, 0.6)
    a, b = rng.uniform(0.18, 0.26), rng.uniform(0.13, 0.2)
    theta = rng.uniform(0, np.pi)
    u = ((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)) / a
    v = (-(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)) / b
    r = np.hypot(u, v)
    if label == 0:  # head: bright skull ring around dark brain with a midline echo
        tissue = np.where(r < 1.0, 0.15, tissue)
        tissue += 0.75 * np.exp(-((r - 1.0) / 0.07) ** 2)
        tissue += 0.35 * (np.abs(v) < 0.05) * (r < 0.9)
    elif label == 1:  # abdomen: rounder, softer outline, dark stomach bubble
        tissue = np.where(r < 1.0, 0.3, tissue) + 0.35 * np.exp(-((r - 1.0) / 0.12) ** 2)
        tissue = np.where(np.hypot(u + 0.3, v - 0.2) < 0.3, 0.05, tissue)
    else:  # femur: a bright, thin bone with an acoustic shadow beneath it
        along, across = u * a / 0.3, v * b / 0.02
        bone = (np.abs(along) < 1.0) & (np.abs(across) < 1.0)
        tissue = np.where(bone, 0.95, tissue)
        shadow = ndimage.binary_dilation(bone, iterations=1)
        for _ in range(int(size * 0.15)):
            shadow = shadow | np.roll(shadow, 1, axis=0)
        tissue = np.where(shadow & ~bone, tissue * 0.35, tissue)
    # Speckle: Rayleigh-distributed magnitude of smoothed complex noise.
    speckle = np.hypot(ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.8),
                       ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.8))
    speckle /= speckle.mean()
    attenuation = np.exp(-1.2 * radius)
    image = np.clip(tissue, 0, 1) * speckle * attenuation * 1.3 * fov
    image = ndimage.gaussian_filter(image, 0.5)
    return np.clip(image, 0.0, 1.0)


def load_phantom(n: int = 96, *, image_size: int = 64, seed: int = 0) -> Dataset:
    """A deterministic synthetic B-mode ultrasound set (SYNTHETIC: not patient data).

    Sector-shaped field of view, speckle, depth attenuation, and one of three
    anatomies per image (`head`: skull ring with midline echo; `abdomen`: round
    outline with a dark stomach; `femur`: bright bone with its acoustic shadow).
    It exists so that the corruption study's pipeline runs out of the box.
    """
    if n < 1:
        raise ValueError(f"phantom: need at least one image, got n={n}.")
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int32) % len(PHANTOM_CLASSES)
    images = np.stack([_phantom_image(rng, int(c), image_size) for c in labels])[..., None]
    return Dataset(quantize(images), labels, PHANTOM_CLASSES, "phantom")


# ------------------------------------------------------------------ tfds


def load_tfds(name: str, *, image_size: int, channels: int = 1, split: str = "train",
              limit: int | None = None, data_dir: str | None = None) -> Dataset:
    """A TensorFlow Datasets set prepared locally, read whole with `tfds.data_source`
    (through `data.stream.tfds_source`, so each image is converted as a streamed one).

    No TensorFlow is needed and nothing is downloaded: the data must already be in
    `data_dir` (TFDS' default if None). Needs the optional `tensorflow-datasets`.
    """
    from jaxrobust.data import stream

    source, names = stream.tfds_source(name, split=split, image_size=image_size,
                                       channels=channels, data_dir=data_dir)
    count = len(source) if limit is None else min(limit, len(source))
    if not count:
        raise ValueError(f"tfds:{name} split {split!r} is empty.")
    images, labels = source[np.arange(count)]
    return Dataset((images / 255.0).astype(np.float32), np.asarray(labels, np.int32),
                   tuple(names), f"tfds:{name}")


def load(source: str, *, image_size: int, channels: int = 1, strict: bool = False,
         n: int = 96, seed: int = 0, log=print, protocol: str = "continuous") -> Dataset:
    """Loads `source`: `phantom`, `digits`, `folder:PATH` or `tfds:NAME`.

    `protocol="study"` loads a folder as the corruption study loaded its files (see
    `load_folder`); the other sources are the same under either protocol.
    """
    if source == "phantom":
        ds = load_phantom(n, image_size=image_size, seed=seed)
        if channels == 3:
            ds = dataclasses.replace(ds, images=np.repeat(ds.images, 3, -1))
        return ds
    if source == "digits":
        return load_digits(image_size=image_size)
    if source.startswith("folder:"):
        return load_folder(os.path.expanduser(source[len("folder:"):]), image_size=image_size,
                           channels=channels, strict=strict, log=log, protocol=protocol)
    if source.startswith("tfds:"):
        return load_tfds(source[len("tfds:"):], image_size=image_size, channels=channels)
    raise ValueError(f"unknown data source {source!r}; use phantom, digits, folder:PATH "
                     "or tfds:NAME.")


def sample_image(size: int = 174) -> np.ndarray:
    """scikit-image's bundled camera photograph, grayscale, `(size, size, 1)`, 8-bit-valued
    (default: the study's 174 x 174)."""
    from skimage import data, transform

    image = transform.resize(data.camera(), (size, size), anti_aliasing=True)
    return (np.round(image * 255.0) / 255.0).astype(np.float32)[..., None]


def gallery_image(source: str, size: int = 224) -> np.ndarray:
    """The gallery's input: an image file, or `sample` (scikit-image's astronaut), as
    an 8-bit-valued float32 `(size, size, C)`: the shorter side resized to `size`, the
    centre cropped square (ImageNet-C's 224-pixel protocol)."""
    from skimage import data, transform

    from jaxrobust.data.sources import read_image

    if source == "sample":
        image = data.astronaut() / 255.0
    elif not os.path.isfile(source):
        raise ValueError(f"gallery image {source} does not exist; pass an image file or "
                         "'sample'.")
    else:
        try:
            image = read_image(source)
        except ValueError as e:
            raise ValueError(f"gallery image {source}: {e}; pass a PNG, JPEG or TIFF "
                             "picture.") from None
    h, w = image.shape[:2]
    scale = size / min(h, w)
    shape = (max(size, round(h * scale)), max(size, round(w * scale)))
    image = transform.resize(image, shape + image.shape[2:], anti_aliasing=True)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    image = image[top:top + size, left:left + size]
    return (np.round(image * 255.0) / 255.0).astype(np.float32)
