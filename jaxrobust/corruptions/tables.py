"""The corruption benchmarks' parameter tables: ImageNet-C, CIFAR-10-C, Tiny-ImageNet-C
and ImageNet 64x64-C.

Each benchmark was rendered by its own generator in `hendrycks/robustness`
(`ImageNet-C/create_c/`), with its own values per severity 1..5 and, for a few
corruptions, its own formula:

* `imagenet`: `imagecorruptions` 1.1.2 (the pip package of `make_imagenet_c.py`),
  224-pixel images. jaxrobust's default.
* `cifar10`: `make_cifar_c.py`, 32-pixel images.
* `tinyimagenet`: `make_tinyimagenet_c.py`, 64-pixel images.
* `imagenet64`: `make_imagenet_64_c.py`, 64-pixel images (its values are those of
  `tinyimagenet`, kept apart because they are two benchmarks).

Formulas that differ from `imagenet` in the three small-image generators: `pixelate`
resizes BOX down and BOX up (not NEAREST up); `elastic_transform` is a random affine
warp followed by a displacement field, all in units of the image side (alpha, sigma,
affine shift per severity), so its level there is the severity. Everything else is
the same formula with other values. Pixel-valued parameters hold for the benchmark's
image side (`IMAGE_SIZE`) and the kernels scale them with the image they get.

The rows here are the generators' `c = [...]` lists, transcribed. The per-severity
*levels* of the kernels whose level is a physical parameter are in `LEVELS`
(`shot_noise`'s level is `1 / photons`); the kernels whose parameters come in tuples
take the severity itself and read their rows here (`rows`).
"""

from __future__ import annotations

BENCHMARKS = ("imagenet", "cifar10", "tinyimagenet", "imagenet64")
#: The default table: ImageNet-C as `imagecorruptions` renders it.
DEFAULT = "imagenet"
#: Image side (pixels) each benchmark's parameters were written for.
IMAGE_SIZE = {"imagenet": 224, "cifar10": 32, "tinyimagenet": 64, "imagenet64": 64}
#: Where each table comes from.
SOURCE = {
    "imagenet": "ImageNet-C (Hendrycks & Dietterich, 2019), as imagecorruptions 1.1.2",
    "cifar10": "CIFAR-10-C (hendrycks/robustness make_cifar_c.py)",
    "tinyimagenet": "Tiny-ImageNet-C (hendrycks/robustness make_tinyimagenet_c.py)",
    "imagenet64": "ImageNet 64x64-C (hendrycks/robustness make_imagenet_64_c.py)",
}


def _same_as_tiny(table: dict) -> dict:
    table["imagenet64"] = table["tinyimagenet"]
    return table


#: Level of each physical-parameter kernel at severities 1..5, per benchmark.
LEVELS: dict[str, dict[str, tuple[float, ...]]] = {
    "gaussian_noise": _same_as_tiny({
        "imagenet": (0.08, 0.12, 0.18, 0.26, 0.38),
        "cifar10": (0.04, 0.06, 0.08, 0.09, 0.10),
        "tinyimagenet": (0.04, 0.08, 0.12, 0.15, 0.18)}),
    "shot_noise": _same_as_tiny({  # 1 / photons
        "imagenet": (1 / 60, 1 / 25, 1 / 12, 1 / 5, 1 / 3),
        "cifar10": (1 / 500, 1 / 250, 1 / 100, 1 / 75, 1 / 50),
        "tinyimagenet": (1 / 250, 1 / 100, 1 / 50, 1 / 30, 1 / 15)}),
    "impulse_noise": _same_as_tiny({
        "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27),
        "cifar10": (0.01, 0.02, 0.03, 0.05, 0.07),
        "tinyimagenet": (0.01, 0.02, 0.05, 0.08, 0.14)}),
    "speckle_noise": _same_as_tiny({
        "imagenet": (0.15, 0.2, 0.35, 0.45, 0.6),
        "cifar10": (0.06, 0.1, 0.12, 0.16, 0.2),
        "tinyimagenet": (0.15, 0.2, 0.25, 0.3, 0.35)}),
    "gaussian_blur": _same_as_tiny({  # sigma in pixels at IMAGE_SIZE
        "imagenet": (1, 2, 3, 4, 6),
        "cifar10": (0.4, 0.6, 0.7, 0.8, 1),
        "tinyimagenet": (0.5, 0.75, 1, 1.25, 1.5)}),
    "brightness": _same_as_tiny({
        "imagenet": (0.1, 0.2, 0.3, 0.4, 0.5),
        "cifar10": (0.05, 0.1, 0.15, 0.2, 0.3),
        "tinyimagenet": (0.1, 0.2, 0.3, 0.4, 0.5)}),
    "contrast": _same_as_tiny({
        "imagenet": (0.4, 0.3, 0.2, 0.1, 0.05),
        "cifar10": (0.75, 0.5, 0.4, 0.3, 0.15),
        "tinyimagenet": (0.4, 0.3, 0.2, 0.1, 0.05)}),
    "elastic_transform": {  # imagenet only: the small-image generators' level is severity
        "imagenet": (12.5, 16.25, 21.25, 25.0, 30.0)},
    "pixelate": _same_as_tiny({
        "imagenet": (0.6, 0.5, 0.4, 0.3, 0.25),
        "cifar10": (0.95, 0.9, 0.85, 0.75, 0.65),
        "tinyimagenet": (0.9, 0.8, 0.7, 0.6, 0.5)}),
    "jpeg_compression": _same_as_tiny({
        "imagenet": (25, 18, 15, 10, 7),
        "cifar10": (80, 65, 58, 50, 40),
        "tinyimagenet": (65, 58, 50, 40, 25)}),
}

#: Rows of the kernels whose level is the severity: per benchmark, one tuple per
#: severity 1..5. The columns are named in each kernel's docstring.
ROWS: dict[str, dict[str, tuple[tuple[float, ...], ...]]] = {
    # (radius px, anti-alias sigma)
    "defocus_blur": _same_as_tiny({
        "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "cifar10": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "tinyimagenet": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1))}),
    # (sigma px, max shuffle distance px, passes)
    "glass_blur": _same_as_tiny({
        "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        "cifar10": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "tinyimagenet": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2))}),
    # (radius px, sigma px)
    "motion_blur": _same_as_tiny({
        "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "cifar10": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "tinyimagenet": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3))}),
    # the zoom lists `np.arange(1, end, step)`: (end, step)
    "zoom_blur": _same_as_tiny({
        "imagenet": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
        "cifar10": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
        "tinyimagenet": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01),
                         (1.26, 0.01))}),
    # (mean, std, zoom, threshold, streak radius px, streak sigma px, image weight)
    "snow": _same_as_tiny({
        "imagenet": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                     (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                     (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
        "cifar10": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
        "tinyimagenet": ((0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
                         (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
                         (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
                         (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6))}),
    # (image weight, frost weight)
    "frost": _same_as_tiny({
        "imagenet": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
        "cifar10": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        "tinyimagenet": ((1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55))}),
    # (fog strength, wibble decay of the plasma fractal)
    "fog": _same_as_tiny({
        "imagenet": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
        "cifar10": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "tinyimagenet": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75))}),
    # (mean, std, sigma px, threshold, intensity (water) / mud sigma px, 0 water / 1 mud)
    "spatter": _same_as_tiny({
        "imagenet": ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                     (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                     (0.67, 0.4, 1, 0.65, 1.5, 1)),
        "cifar10": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                    (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
        "tinyimagenet": ((0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0),
                         (0.65, 0.3, 1, 0.69, 0.6, 0), (0.65, 0.1, 0.7, 0.68, 0.6, 1),
                         (0.65, 0.1, 0.5, 0.67, 0.6, 1))}),
    # (saturation factor, saturation offset)
    "saturate": _same_as_tiny({
        "imagenet": ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)),
        "cifar10": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        "tinyimagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2))}),
    # (alpha, sigma, affine shift) as fractions of the image side; small images only
    "elastic_transform": _same_as_tiny({
        "cifar10": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                    (0.1, 0.03, 0.03)),
        "tinyimagenet": ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06),
                         (0.1, 0.03, 0.03), (0.16, 0.03, 0.02))}),
}


def check(table: str) -> str:
    """`table` if it names a benchmark.

    Raises:
        ValueError: an unknown table; the message lists the known ones.
    """
    if table not in BENCHMARKS:
        raise ValueError(f"unknown corruption table {table!r}; use one of "
                         f"{', '.join(BENCHMARKS)}.")
    return table


def rows(name: str, table: str) -> tuple[tuple[float, ...], ...]:
    """The five rows (severities 1..5) of corruption `name` in benchmark `table`."""
    return ROWS[name][check(table)]


def reference_size(option, table: str) -> int | None:
    """The image side a kernel's pixel parameters are for: `option` itself (an int, or
    None: the published pixel values unscaled at any size), or the table's side when
    `option == "table"`."""
    return IMAGE_SIZE[check(table)] if option == "table" else option
