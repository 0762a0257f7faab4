"""Blur kernels of the ImageNet-C suite: Gaussian, defocus, glass, motion and zoom blur.

`gaussian_blur` takes its physical parameter (sigma in pixels) as the level. The
others take ImageNet-C's *severity* as the level, continuous in `[0, 5]`: their
parameters come in tuples (radius and anti-aliasing, sigma and shuffle distance and
passes...), interpolated linearly between the published severities 1..5; below 1 the
output fades from the clean image to severity 1. Spatial parameters were tuned for
224-pixel images and are scaled by `min(H, W) / reference_size` (static, default 224;
pass the image side to get the published pixel values at any size).

Every severity-level kernel takes a static `table=`: the benchmark whose parameters
it uses (`tables.BENCHMARKS`: `imagenet`, the default, `cifar10`, `tinyimagenet`,
`imagenet64`); its pixel parameters are then scaled from that benchmark's image side
(`reference_size="table"`, the default).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _fusion, _prng
from jaxrobust._validation import check_image, check_level
from jaxrobust.corruptions import _ops, tables
from jaxrobust.corruptions._ops import IMAGENET_C_SIZE


def default_max_sigma(shape) -> float:
    """Static Gaussian support of `gaussian_blur`: sigma 8 at 224 px, scaled with size."""
    return 8.0 * max(1.0, min(shape[0], shape[1]) / IMAGENET_C_SIZE)


def gaussian_blur(key, image, sigma, *, max_sigma: float | None = None):
    """`skimage.filters.gaussian(image, sigma, channel_axis=-1)` (mode `nearest`,
    truncate 4), as ImageNet-C's `gaussian_blur` (severities 1-5: sigma 1, 2, 3, 4, 6
    pixels at 224 px).

    Args:
        key: unused (deterministic).
        image: `(H, W, C)` float image in [0, 1].
        sigma: standard deviation in pixels, `0 <= sigma <= max_sigma`; may be traced.
        max_sigma: static bound that sizes the filter; default 8 at 224 px, scaled
            with the image side.
    """
    del key
    image = check_image(image, fn="gaussian_blur")
    max_sigma = default_max_sigma(image.shape) if max_sigma is None else float(max_sigma)
    sigma, ok = check_level(sigma, fn="gaussian_blur", what="Gaussian sigma in pixels",
                            low=0.0, high=max_sigma)
    out = _ops.gaussian_blur_image(image.astype(jnp.float32), sigma, max_sigma)
    return _ops.finish(out, ok, image)


def _defocus_kernel(radius, alias_blur, support: int):
    """ImageNet-C's `disk(radius, alias_blur)` on a static `(2 support + 1)^2` grid.

    The reference draws the disk on `-8..8` (radius <= 8) or `-radius..radius`, then
    smooths it with `cv2.GaussianBlur` (3x3 or 5x5, OpenCV's mirrored border at the
    edge of that grid); both are reproduced for a traced radius.
    """
    grid = jnp.arange(-support, support + 1, dtype=jnp.float32)
    half = jnp.where(radius <= 8, 8.0, jnp.floor(radius))
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius ** 2).astype(jnp.float32)
    disk = jnp.where((jnp.abs(grid[:, None]) <= half) & (jnp.abs(grid[None, :]) <= half),
                     disk, 0.0)
    disk = disk / jnp.sum(disk)
    ksize_half = jnp.where(radius <= 8, 1, 2)
    taps = jnp.arange(-2, 3, dtype=jnp.float32)
    g = jnp.where(jnp.abs(taps) <= ksize_half,
                  jnp.exp(-taps ** 2 / (2.0 * jnp.maximum(alias_blur, 1e-6) ** 2)), 0.0)
    g = g / jnp.sum(g)
    # mirrored (reflect-101) border about the grid -half..half, along each axis
    n = 2 * half + 1
    idx = grid[:, None] + taps[None, :] + half  # position within 0..2 half
    period = 2 * n - 2
    j = jnp.mod(idx, period)
    j = jnp.where(j >= n, period - j, j) - half + support
    onehot = (j[:, :, None] == jnp.arange(2 * support + 1)[None, None, :]).astype(jnp.float32)
    m = jnp.einsum("ikj,k->ij", onehot, g)  # (grid, grid) smoothing matrix
    inside = (jnp.abs(grid) <= half).astype(jnp.float32)
    m = m * inside[:, None] * inside[None, :]
    return m @ disk @ m.T


def defocus_blur(key, image, severity, *, table: str = tables.DEFAULT,
                 reference_size: int | str | None = "table"):
    """ImageNet-C's `defocus_blur`: correlation with an anti-aliased disk.

    `cv2.filter2D(x, -1, disk(radius, alias_blur))` with OpenCV's mirrored border,
    computed through the FFT; `disk` is the generators' (a 17x17 grid and a 3x3
    anti-aliasing blur up to radius 8, then a `2 radius + 1` grid and 5x5), the same in
    every benchmark. Severities 1-5: `tables.ROWS["defocus_blur"][table]`, (radius
    px, anti-alias sigma).

    Args:
        key: unused (deterministic).
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        severity: `0 <= severity <= 5`, may be fractional and traced.
        table: the benchmark's parameters (static).
        reference_size: image side the pixel parameters are for (static): "table"
            (the benchmark's), an int, or None (the published pixels at any size).
    """
    del key
    image, x, severity, ok = _ops.start(image, severity, "defocus_blur")
    rows = tables.rows("defocus_blur", table)
    scale = _ops.size_scale(image.shape, tables.reference_size(reference_size, table))
    radius, alias = _ops.table_params(rows, jnp.maximum(severity, 1.0) - 1.0)
    radius = radius * scale
    support = max(8, _ops.ceil_int(max(r for r, _ in rows) * scale))
    out = _ops.fft_correlate(x, _defocus_kernel(radius, alias, support), "mirror")
    return _ops.finish(_ops.blend_below_one(x, out, severity), ok, image)


def glass_blur(key, image, severity, *, table: str = tables.DEFAULT,
               reference_size: int | str | None = "table"):
    """ImageNet-C's `glass_blur`: blur, shuffle pixels locally, blur again.

    Gaussian blur (`sigma`), truncation to 8 bits, then `passes` rounds in which every
    pixel at least `delta` from the top/left border (and `delta` from the bottom/right)
    takes the value of the pixel `(dy, dx)` away, `dy, dx` uniform integers in
    `[-delta, delta - 1]`, then the same Gaussian blur again.

    Differences from `imagecorruptions` (documented choices): the reference's "swap"
    assigns a NumPy view after overwriting it, so it copies instead of swapping, and it
    walks the pixels one by one, so copies chain. Here every pixel copies from the
    image as it was before the pass, all at once (the same displacement distribution,
    the asymmetric `randint(-delta, delta)` range included, but no chains).

    Args:
        key: a `jax.random` key (the displacements).
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        severity: `0 <= severity <= 5`, may be fractional and traced. Severities 1-5:
            `tables.ROWS["glass_blur"][table]`, (sigma px, max shuffle distance px,
            passes); fractional passes are rounded.
        table: the benchmark's parameters (static).
        reference_size: image side the pixel parameters are for (static): "table"
            (the benchmark's), an int, or None (the published pixels at any size).
    """
    image, x, severity, ok = _ops.start(image, severity, "glass_blur")
    H, W = x.shape[:2]
    rows = tables.rows("glass_blur", table)
    scale = _ops.size_scale(image.shape, tables.reference_size(reference_size, table))
    sigma, delta, passes = _ops.table_params(rows, jnp.maximum(severity, 1.0) - 1.0)
    sigma, delta = sigma * scale, delta * scale
    max_sigma = max(s for s, _, _ in rows) * scale
    blurred = _ops.gaussian_blur_image(x, sigma, max_sigma)
    y = jnp.floor(blurred * 255.0 + 1e-4) / 255.0
    ys = jnp.arange(H, dtype=jnp.float32)[:, None]
    xs = jnp.arange(W, dtype=jnp.float32)[None, :]
    moving = (ys > delta) & (ys <= H - delta) & (xs > delta) & (xs <= W - delta)

    def one_pass(y, src_y, src_x, on):
        return jnp.where(on[..., None], y[src_y, src_x], y)

    for i, k in enumerate(jax.random.split(key, max(p for _, _, p in rows))):
        d = jnp.floor(_prng.uniform(k, (2, H, W), jnp.float32, -delta, delta))
        src_y = jnp.clip(ys + d[0], 0, H - 1).astype(jnp.int32)
        src_x = jnp.clip(xs + d[1], 0, W - 1).astype(jnp.int32)
        # each pass compiled apart: fused together, a pass's gather re-evaluated the
        # passes before it at every source pixel (2x the work per pass)
        y = _fusion.separately(one_pass, y, src_y, src_x, moving & (i < jnp.round(passes)))
    out = _ops.gaussian_blur_image(y, sigma, max_sigma)
    return _ops.finish(_ops.blend_below_one(x, out, severity), ok, image)


def motion_blur(key, image, severity, *, table: str = tables.DEFAULT,
                reference_size: int | str | None = "table"):
    """ImageNet-C's `motion_blur`: a one-sided Gaussian streak at a random angle.

    `2 radius + 1` shifted copies (shift `i` pixels along the angle, weight
    `exp(-i^2 / 2 sigma^2)`), the angle uniform in [-45, 45] degrees from `key`.
    Severities 1-5: `tables.ROWS["motion_blur"][table]`, (radius px, sigma px). (The
    generators used ImageMagick's motion blur; `imagecorruptions` and this kernel use
    the NumPy re-implementation, for every table.)

    Args:
        key: a `jax.random` key (the angle).
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        severity: `0 <= severity <= 5`, may be fractional and traced.
        table: the benchmark's parameters (static).
        reference_size: image side the pixel parameters are for (static): "table"
            (the benchmark's), an int, or None (the published pixels at any size).
    """
    image, x, severity, ok = _ops.start(image, severity, "motion_blur")
    rows = tables.rows("motion_blur", table)
    scale = _ops.size_scale(image.shape, tables.reference_size(reference_size, table))
    radius, sigma = _ops.table_params(rows, jnp.maximum(severity, 1.0) - 1.0)
    angle = jax.random.uniform(key, (), jnp.float32, -45.0, 45.0)
    max_radius = _ops.ceil_int(max(r for r, _ in rows) * scale)
    out = _ops.motion_blur_image(x, radius * scale, sigma * scale, angle, max_radius)
    return _ops.finish(_ops.blend_below_one(x, out, severity), ok, image)


def _zoom_count(largest, step):
    return jnp.floor((largest - 1.0) / step + 1e-4) + 1.0


@functools.lru_cache(maxsize=8)
def zoom_table(table: str) -> tuple[tuple[tuple[float, float], ...], int]:
    """`(rows, max_zooms)` of `zoom_blur` in benchmark `table`: per severity 1..5 the
    (largest zoom, zoom step) of the generator's `np.arange(1, end, step)` (its float
    end point included where NumPy's arange includes it: ImageNet-C's severity 1 reaches
    1.11 with 12 zooms), and the most zooms any severity in [1, 5] asks for (the static
    support)."""
    ends = tables.rows("zoom_blur", table)
    rows = tuple((float(np.arange(1, end, step)[-1]), float(step)) for end, step in ends)
    grid = np.linspace(1, 5, 401)
    largest = np.interp(grid, np.arange(1, 6), [z for z, _ in rows])
    steps = np.interp(grid, np.arange(1, 6), [t for _, t in rows])
    most = int(max(np.floor((largest - 1.0) / steps + 1e-4) + 1))
    return rows, max(most, max(len(np.arange(1, e, t)) for e, t in ends))


@functools.lru_cache(maxsize=64)
def _published_zoom_geometry(H: int, W: int, table: str) -> np.ndarray:
    """`(5, max_zooms, 2, 3)` float32: per severity, zoom and axis, the reference's
    `(crop, size, valid)` computed in float64 as `clipped_zoom` and SciPy do."""
    out = np.zeros((5, zoom_table(table)[1], 2, 3), np.float32)
    for s, (end, step) in enumerate(tables.rows("zoom_blur", table)):
        for k, zoom in enumerate(np.arange(1, end, step)):
            for a, n in enumerate((H, W)):
                crop = int(np.ceil(n / float(zoom)))
                size = int(round(crop * zoom))
                scale = (crop - 1) / (size - 1) if size > 1 else 0.0
                valid = int(np.sum(np.arange(size) * scale <= crop - 1))
                out[s, k, a] = crop, size, valid
    return out


@jax.jit  # eager calls: compiled once per shape, not at every call
def _zoom_sum(x, step, count, published, row):
    """`x + sum_k clipped_zoom(x, 1 + k step)` over the zooms `k < count`; `row`
    `(zooms, 2, 3)` the published geometry of each zoom, used where `published`."""
    H, W = x.shape[:2]

    def add(acc, args):
        k, fixed = args
        zoom = 1.0 + k * step
        geometry = [tuple(jnp.where(published, fixed[a], jnp.stack(_ops.zoom_geometry(n, zoom))))
                    for a, n in enumerate((H, W))]
        zoomed = _ops.clipped_zoom(x, zoom, geometry, pairs=pairs)
        return acc + jnp.where(k < count, zoomed, 0.0), None

    pairs = _ops.column_pairs(x)  # read by every zoom
    ks = jnp.arange(row.shape[0], dtype=jnp.float32)
    total, _ = jax.lax.scan(add, x, (ks, row))
    return total


def zoom_blur(key, image, severity, *, table: str = tables.DEFAULT):
    """ImageNet-C's `zoom_blur`: the mean of the image and its centred zooms.

    `(x + sum_k clipped_zoom(x, 1 + k step)) / (n + 1)` over the zooms `1 <= 1 + k step
    <= largest` (each a centre crop resized back with `scipy.ndimage.zoom(order=1)`).
    Severities 1-5: the generator's zoom lists `np.arange(1, end, step)`,
    `tables.ROWS["zoom_blur"][table]` (`zoom_table`). Relative to the image, so not
    scaled with size.

    Args:
        key: unused (deterministic).
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        severity: `0 <= severity <= 5`, may be fractional and traced.
        table: the benchmark's parameters (static).
    """
    del key
    image, x, severity, ok = _ops.start(image, severity, "zoom_blur")
    H, W = x.shape[:2]
    rows, _ = zoom_table(tables.check(table))
    largest, step = _ops.table_params(rows, jnp.maximum(severity, 1.0) - 1.0)
    count = _zoom_count(largest, step)
    # At the published severities the crop geometry comes from the host, in float64
    # like the reference's: the float32 product crop * zoom can round the other way.
    exact = jnp.asarray(_published_zoom_geometry(H, W, table))  # (5, zooms, 2 axes, 3)
    published = (severity >= 1) & (severity == jnp.round(severity))
    row = exact[jnp.clip(jnp.round(severity).astype(jnp.int32) - 1, 0, 4)]
    out = _zoom_sum(x, step, count, published, row) / (count + 1.0)
    return _ops.finish(_ops.blend_below_one(x, out, severity), ok, image)
