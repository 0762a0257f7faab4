"""Building blocks shared by the corruption kernels: filters with traced widths,
resampling, colour spaces and severity tables.

Everything here works on one `(H, W, C)` float32 image (or one `(H, W)` plane) with
static shapes, so that a kernel's level can stay traced: a filter whose width depends
on the level is given a static support sized for the largest level, and the taps
outside the current width get weight zero.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrobust import _prng
from jaxrobust._fusion import separately
from jaxrobust._validation import check_image, check_level

#: ImageNet-C's tables were written for 224 x 224 images.
IMAGENET_C_SIZE = 224


# --------------------------------------------------------------------------------------
# Boundary rules and separable filters
# --------------------------------------------------------------------------------------

def boundary_index(idx, n: int, mode: str):
    """Maps (possibly out-of-range) integer indices into `[0, n)` by a boundary rule.

    Modes follow `scipy.ndimage`: `nearest` (a a | a b c | c c), `reflect` (b a | a b c
    | c b, half-sample symmetric), `mirror` (c b | a b c | b a, OpenCV's
    BORDER_REFLECT_101) and `wrap`.
    """
    if mode == "nearest":
        return jnp.clip(idx, 0, n - 1)
    if mode == "wrap":
        return jnp.mod(idx, n)
    if mode == "reflect":
        period = 2 * n
        i = jnp.mod(idx, period)
        return jnp.where(i >= n, period - 1 - i, i)
    if mode == "mirror":
        if n == 1:
            return jnp.zeros_like(idx)
        period = 2 * n - 2
        i = jnp.mod(idx, period)
        return jnp.where(i >= n, period - i, i)
    raise ValueError(f"unknown boundary mode {mode!r}; use nearest, reflect, mirror or wrap.")


#: `scipy.ndimage` boundary modes as `numpy.pad` modes.
_PAD_MODE = {"nearest": "edge", "reflect": "symmetric", "mirror": "reflect", "wrap": "wrap"}


def pad_axis(x, axis: int, radius: int, mode: str):
    """`x` extended by `radius` samples on both sides of `axis` under a boundary rule
    (see `boundary_index`)."""
    n = x.shape[axis]
    if radius == 0:
        return x
    if radius < n and n > 1:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (radius, radius)
        return jnp.pad(x, widths, mode=_PAD_MODE[mode])
    return jnp.take(x, boundary_index(jnp.arange(-radius, n + radius), n, mode), axis=axis)


def filter_separable(image, wy, wx, mode: str):
    """Correlates the rows of `image` `(H, W, ...)` with `wy` and the columns with `wx`.

    `out[i, j] = sum_{a, b} wy[a] wx[b] image[i + a - Ry, j + b - Rx]`, out-of-range
    samples by the boundary `mode`. The taps (`(2R + 1,)` each, may be traced) are
    applied as `2R + 1` shifted multiply-adds per axis on the image flattened to
    `(H, W * C)` (columns shift by `C` values), each pass compiled apart with a flat
    output (`jaxrobust._fusion`) so that XLA vectorises it; cheaper than dense `(n, n)`
    filter matrices, above all where the taps differ per image.
    """
    H, W = image.shape[:2]
    C = math.prod(image.shape[2:])
    ry, rx = wy.shape[0] // 2, wx.shape[0] // 2
    wy, wx = wy.astype(jnp.float32), wx.astype(jnp.float32)
    x = image.astype(jnp.float32).reshape(H, W * C)

    def taps(padded, weights, step, length, axis):
        parts = (weights[k] * lax.slice_in_dim(padded, k * step, k * step + length, axis=axis)
                 for k in range(weights.shape[0]))
        return functools.reduce(jnp.add, parts)

    padded = separately(lambda x: pad_axis(x, 0, ry, mode), x)
    x = separately(lambda p: taps(p, wy, 1, H, 0), padded)
    padded = separately(
        lambda x: pad_axis(x.reshape(H, W, C), 1, rx, mode).reshape(H, -1), x)
    x = separately(lambda p: taps(p, wx, C, W * C, 1), padded)
    return x.reshape(image.shape)


def scipy_gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
    """`scipy.ndimage.gaussian_filter1d`'s order-0 kernel for a concrete `sigma`, in
    float64: `(2 r + 1,)` with `r = int(truncate * sigma + 0.5)`."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def gaussian_taps(sigma, max_radius: int, *, truncate: float = 4.0):
    """scipy's Gaussian taps for a (traced) `sigma` on a static support `max_radius`.

    `scipy.ndimage.gaussian_filter` (and so `skimage.filters.gaussian`) uses the
    radius `int(truncate * sigma + 0.5)`; taps beyond it are zero here. `sigma == 0`
    gives the identity.
    """
    x = jnp.arange(-max_radius, max_radius + 1, dtype=jnp.float32)
    sigma = jnp.asarray(sigma, jnp.float32)
    radius = jnp.floor(truncate * sigma + 0.5)
    safe = jnp.maximum(sigma, 1e-6)
    w = jnp.where(jnp.abs(x) <= radius, jnp.exp(-0.5 * (x / safe) ** 2), 0.0)
    w = w / jnp.sum(w)
    return jnp.where(sigma > 0, w, (x == 0).astype(jnp.float32))


def gaussian_radius(max_sigma: float, truncate: float = 4.0) -> int:
    """Static support that holds scipy's Gaussian up to `max_sigma`."""
    return int(truncate * max_sigma + 0.5)


def gaussian_blur_image(image, sigma, max_sigma: float, *, mode: str = "nearest",
                        truncate: float = 4.0):
    """`skimage.filters.gaussian(image, sigma, mode=mode, truncate=truncate)` per channel.

    `sigma` is a scalar or a `(sigma_y, sigma_x)` pair, and may be traced up to the
    static `max_sigma`.
    """
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (2,))
    r = gaussian_radius(max_sigma, truncate)
    return filter_separable(image, gaussian_taps(sigma[0], r, truncate=truncate),
                            gaussian_taps(sigma[1], r, truncate=truncate), mode)


# --------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------

def zoom_geometry(n: int, zoom):
    """`(crop, size, valid)` of `clipped_zoom` on an axis of length `n`: the centre
    crop's length `ceil(n / zoom)`, the length `round(crop * zoom)` it is zoomed to,
    and how many of those samples land inside the crop (all of them in exact
    arithmetic)."""
    crop = jnp.ceil(n / zoom)
    size = jnp.round(crop * zoom)
    return crop, size, size


def column_pairs(image):
    """`(H, W, 2, ...)`: each pixel beside its right neighbour (the last repeated), so
    that a linear resampling of the columns gathers both taps as one contiguous slice
    (cheaper on CPU than two gathers along the inner axis). Build it once when
    several resamplings read the same image (`clipped_zoom(..., pairs=...)`)."""
    right = jnp.concatenate([image[:, 1:], image[:, -1:]], axis=1)
    return jnp.stack([image, right], axis=2)


def clipped_zoom(image, zoom, geometry=None, *, pairs=None):
    """ImageNet-C's `clipped_zoom`: the centre `ceil(n / zoom)` crop, zoomed back.

    The crop is resized by `scipy.ndimage.zoom(order=1)` (corner-aligned linear
    interpolation to `round(crop * zoom)` samples) and the first `n` samples are kept,
    on both axes; where the zoom is shorter than the axis the rest is 0. `zoom >= 1`
    may be traced. `geometry` optionally gives each axis's `(crop, size, valid)` (see
    `zoom_geometry`), e.g. computed on the host in float64 like the reference, where
    the float32 product would round the other way, and where SciPy's last sample can
    fall a rounding error outside the crop (`mode='constant'` then gives 0 there).
    `pairs` is `column_pairs(image)`, if the caller has it already.
    """
    def axis_taps(axis):
        n = image.shape[axis]
        crop, size, valid = zoom_geometry(n, zoom) if geometry is None else geometry[axis]

        def taps(crop, size, valid):
            top = jnp.floor((n - crop) / 2)
            o = jnp.arange(n, dtype=jnp.float32)
            coords = top + o * (crop - 1) / jnp.maximum(size - 1, 1)
            lo = jnp.clip(jnp.floor(coords), 0, n - 1)
            # a zoom shorter than the axis leaves the rest empty (the reference then
            # adds the short layer into the top-left corner only)
            keep = (o < valid).astype(jnp.float32)
            return lo.astype(jnp.int32), coords - lo, keep

        # computed apart: fused into the gathers, these index vectors were recomputed
        # for every gathered value (zoom_blur ran 3x slower)
        lo, frac, keep = separately(taps, crop, size, valid)
        shape = [1] * image.ndim
        shape[axis] = -1
        return lo, frac.reshape(shape), keep.reshape(shape)

    # columns first, both taps of a sample gathered as one slice of `pairs`
    lo, frac, keep = axis_taps(1)
    both = jnp.take(column_pairs(image) if pairs is None else pairs, lo, axis=1)
    out = (both[:, :, 0] * (1.0 - frac) + both[:, :, 1] * frac) * keep
    lo, frac, keep = axis_taps(0)
    hi = jnp.minimum(lo + 1, image.shape[0] - 1)
    return (jnp.take(out, lo, axis=0) * (1.0 - frac) + jnp.take(out, hi, axis=0) * frac) * keep


def bilinear_sample(image, ys, xs, mode: str):
    """`image` `(H, W, C)` sampled at float coordinates `ys, xs` `(H', W')`, linear.

    Out-of-range neighbours follow the boundary `mode` (as `scipy.ndimage.
    map_coordinates(order=1, mode=mode)` for `nearest`, `reflect`, `mirror`, `wrap`).
    """
    H, W = image.shape[:2]
    y0 = jnp.floor(ys)
    x0 = jnp.floor(xs)
    fy = (ys - y0)[..., None]
    fx = (xs - x0)[..., None]
    y0 = y0.astype(jnp.int32)
    x0 = x0.astype(jnp.int32)
    flat = image.reshape(H * W, -1)

    def at(y, x):
        idx = boundary_index(y, H, mode) * W + boundary_index(x, W, mode)
        return jnp.take(flat, idx.reshape(-1), axis=0).reshape(*ys.shape, -1)

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


@functools.partial(jax.jit, static_argnames="max_radius")  # eager calls: compiled once
def motion_blur_image(image, radius, sigma, angle_deg, max_radius: int):
    """ImageNet-C's `_motion_blur`: a one-sided Gaussian-weighted streak at `angle_deg`.

    `2 * radius + 1` taps (weights `exp(-i^2 / 2 sigma^2)`, normalised), tap `i`
    shifting the image by `-ceil(i * (sin a, cos a) - 0.5)` with edges repeated.
    `radius` may be fractional and traced, up to the static `max_radius`; taps past
    the image size are dropped as the reference does.
    """
    H, W = image.shape[:2]
    width = 2.0 * radius + 1.0
    a = jnp.deg2rad(angle_deg)
    taps = jnp.arange(2 * max_radius + 1, dtype=jnp.float32)
    dys = -jnp.ceil(taps * jnp.sin(a) - 0.5).astype(jnp.int32)
    dxs = -jnp.ceil(taps * jnp.cos(a) - 0.5).astype(jnp.int32)
    inside = (jnp.abs(dys) < H) & (jnp.abs(dxs) < W)
    # the reference stops at the first tap that leaves the image
    inside = jnp.cumprod(inside.astype(jnp.int32)) > 0
    weights = jnp.exp(-(taps ** 2) / (2.0 * sigma ** 2))
    weights = weights / jnp.sum(jnp.where(taps < width, weights, 0.0))
    weights = jnp.where((taps < width) & inside, weights, 0.0)

    # every tap is a window of the edge-padded image (a contiguous slice, not a gather)
    pad = 2 * max_radius + 1
    padded = jnp.pad(image, [(pad, pad), (pad, pad)] + [(0, 0)] * (image.ndim - 2),
                     mode="edge")
    start = jnp.zeros((image.ndim - 2,), jnp.int32)

    def tap(acc, args):
        w, dy, dx = args
        corner = jnp.concatenate([jnp.stack([pad - dy, pad - dx]), start])
        window = lax.dynamic_slice(padded, corner, image.shape)
        return acc + w * window, None

    out, _ = lax.scan(tap, jnp.zeros_like(image), (weights, dys, dxs))
    return out


# --------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------

def rgb_to_gray(rgb, weights=(0.299, 0.587, 0.114)):
    """`(H, W, 3)` -> `(H, W)` luma (OpenCV's RGB2GRAY weights by default)."""
    return jnp.tensordot(rgb, jnp.asarray(weights, rgb.dtype), axes=([-1], [0]))


def rgb_to_hsv(rgb):
    """`skimage.color.rgb2hsv` for `(..., 3)` float RGB in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = jnp.max(rgb, axis=-1)
    delta = v - jnp.min(rgb, axis=-1)
    safe_v = jnp.where(v == 0, 1.0, v)
    s = jnp.where(delta == 0, 0.0, delta / safe_v)
    safe_d = jnp.where(delta == 0, 1.0, delta)
    h = jnp.where(b == v, 4.0 + (r - g) / safe_d, 0.0)
    h = jnp.where(g == v, 2.0 + (b - r) / safe_d, h)
    h = jnp.where(r == v, (g - b) / safe_d, h)
    h = jnp.mod(h / 6.0, 1.0)
    h = jnp.where(delta == 0, 0.0, h)
    return jnp.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv):
    """`skimage.color.hsv2rgb` for `(..., 3)` float HSV in [0, 1]."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = jnp.floor(h * 6.0)
    f = h * 6.0 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = jnp.mod(hi, 6).astype(jnp.int32)
    r = jnp.choose(hi, [v, q, p, p, t, v], mode="clip")
    g = jnp.choose(hi, [t, v, v, q, p, p], mode="clip")
    b = jnp.choose(hi, [p, p, t, v, v, q], mode="clip")
    return jnp.stack([r, g, b], axis=-1)


# --------------------------------------------------------------------------------------
# Severity tables
# --------------------------------------------------------------------------------------

def table_params(table, severity):
    """Parameters at a (traced, fractional) position `severity` of a table.

    Row `i` of `table` sits at position `i`; between rows every parameter is
    interpolated linearly (outside, the end rows hold). The kernels pass ImageNet-C's
    severities 1..5 as rows 0..4 and `max(severity, 1) - 1` as the position.

    Returns:
        A tuple of scalars, one per column.
    """
    table = np.asarray(table, np.float32)
    grid = jnp.arange(table.shape[0], dtype=jnp.float32)
    return tuple(jnp.interp(severity, grid, jnp.asarray(table[:, j]))
                 for j in range(table.shape[1]))


def size_scale(image_shape, reference_size: int | None) -> float:
    """How many pixels of this image one pixel of a `reference_size` image is."""
    if reference_size is None:
        return 1.0
    return min(image_shape[0], image_shape[1]) / float(reference_size)


def ceil_int(x: float) -> int:
    return int(math.ceil(x - 1e-9))


def as_rgb(image):
    """`(H, W, 1)` -> `(H, W, 3)` by repetition; 3-channel images unchanged."""
    return jnp.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def uniform(key, shape, low, high):
    return _prng.uniform(key, shape, jnp.float32, low, high)


def finish(out, ok, image, *, clip: bool = True):
    """Clips to [0, 1] (unless `clip=False`: kernels whose output stays in the input's
    range), turns the image NaN where a traced level was out of range and casts back
    to the input dtype: the last line of every kernel."""
    out = jnp.clip(out, 0.0, 1.0) if clip else out
    return jnp.where(ok, out, jnp.nan).astype(image.dtype)


def start(image, level, fn: str, *, what: str = "ImageNet-C severity", low: float = 0.0,
          high: float = 5.0):
    """The first line of every suite kernel: checks the image (one `(H, W, C)` float
    image, C 1 or 3) and the level (`[low, high]`, see `check_level`).

    Returns:
        `(image, x, level, ok)`: the checked image, it as float32, the level and the
        in-range flag for `finish`.
    """
    image = check_image(image, fn=fn)
    check_channels(image, fn)
    level, ok = check_level(level, fn=fn, what=what, low=low, high=high)
    return image, image.astype(jnp.float32), level, ok


def check_channels(image, fn: str):
    """Raises unless `image` has 1 (grayscale) or 3 (RGB) channels."""
    if image.shape[-1] not in (1, 3):
        raise ValueError(f"{fn}: expected 1 (grayscale) or 3 (RGB) channels, got "
                         f"{image.shape[-1]}; convert the image to gray or RGB first.")


def blend_below_one(image, out, severity):
    """Severities below 1 fade from the clean image (0) to severity 1's output (1)."""
    mix = jnp.clip(severity, 0.0, 1.0)
    return image + mix * (out - image)


def _fft_size(n: int) -> int:
    """The smallest `m >= n` whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def fft_correlate(image, kernel, mode: str = "mirror"):
    """2-D correlation of every channel of `image` `(H, W, C)` with a centred odd
    `kernel` `(K, K)` (may be traced), boundary by `mode`, through the FFT.

    `mirror` is OpenCV's default border (BORDER_REFLECT_101), as `cv2.filter2D` uses.
    The padded planes are transformed at the next 2-3-5-smooth size (zeros beyond
    the padding never reach the kept window), along their minor axes.
    """
    H, W, _ = image.shape
    r = kernel.shape[0] // 2
    np_mode = {"mirror": "reflect", "reflect": "symmetric", "nearest": "edge",
               "wrap": "wrap"}[mode]
    planes = jnp.pad(jnp.transpose(image, (2, 0, 1)), ((0, 0), (r, r), (r, r)),
                     mode=np_mode)  # (C, H + 2r, W + 2r)
    size = (_fft_size(planes.shape[1]), _fft_size(planes.shape[2]))
    # correlation = convolution with the flipped kernel; put its centre at (0, 0)
    flipped = kernel[::-1, ::-1]
    k = jnp.zeros(size, jnp.float32).at[:2 * r + 1, :2 * r + 1].set(flipped)
    k = jnp.roll(k, (-r, -r), axis=(0, 1))
    out = jnp.fft.irfft2(jnp.fft.rfft2(planes, s=size) * jnp.fft.rfft2(k)[None], s=size)
    return jnp.transpose(out[:, r:r + H, r:r + W], (1, 2, 0))
