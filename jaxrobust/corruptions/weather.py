"""Weather kernels of the ImageNet-C suite: snow, frost, fog, spatter.

Every kernel takes ImageNet-C's severity as its level, continuous in `[0, 5]`
(parameters interpolated between the published severities; below 1 the output fades
from the clean image), and draws everything random from its `key`. Spatial
parameters are scaled by `min(H, W) / reference_size` (static; by default the
benchmark's image side). Every kernel takes a static `table=`, the benchmark whose
parameters it uses (`tables.BENCHMARKS`; `imagenet` by default). Grayscale images get
the gray version of the coloured layers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _prng
from jaxrobust._fusion import separately
from jaxrobust.corruptions import _ops, tables

_LUMA = (0.2989, 0.5870, 0.1140)  # imagecorruptions' rgb2gray weights


def plasma_fractal(key, map_size: int, decay):
    """ImageNet-C's diamond-square height map, `(map_size, map_size)` in [0, 1].

    A port of `imagecorruptions.plasma_fractal` (itself from FLHerne/mapgen): at each
    level squares then diamonds get the mean of their corners plus uniform noise of
    amplitude `wibble`, which starts at 100 and is divided by `decay` (may be traced)
    per level. `map_size` must be a power of two.
    """
    if map_size & (map_size - 1):
        raise ValueError(f"plasma_fractal: map_size must be a power of two, got {map_size}.")
    # every level's noise in one draw (one generator in the program, not three per level),
    # compiled apart: fused into each of its slices' consumers, the unrolled Threefry
    # (`cpu.enable_fast_random`) was copied into every one (frost at 224: 12 s compile)
    sizes = [(map_size // s) ** 2 for s in (map_size >> i for i in range(
        map_size.bit_length() - 1))]
    noise = iter(jnp.split(_prng.uniform(key, (3 * sum(sizes),), jnp.float32, -1.0, 1.0),
                           np.cumsum([n for n in sizes for _ in range(3)])[:-1]))
    # The map at the current step, kept dense: `grid[i, j]` is the reference's
    # `m[i * step, j * step]`. Each level computes the squares' centres and the two
    # kinds of diamond points on the same grid and interleaves the four into the next,
    # twice as fine (the reference's strided scatters into the full map cost ~10x more).
    grid = jnp.zeros((1, 1), jnp.float32)
    step = map_size
    wibble = jnp.float32(100.0)
    while step >= 2:
        def wibbled(a, wibble=wibble):
            return a / 4 + wibble * next(noise).reshape(a.shape) * wibble

        ul = grid  # corners
        acc = ul + jnp.roll(ul, -1, axis=0)
        acc = acc + jnp.roll(acc, -1, axis=1)
        dr = wibbled(acc)  # centres, m[h::step, h::step]
        lt = wibbled(dr + jnp.roll(dr, 1, axis=0) + ul + jnp.roll(ul, -1, axis=1))
        tt = wibbled(dr + jnp.roll(dr, 1, axis=1) + ul + jnp.roll(ul, -1, axis=0))
        r = grid.shape[0]
        even = jnp.stack([ul, lt], axis=-1).reshape(r, 2 * r)  # m[0::step, 0::h]
        odd = jnp.stack([tt, dr], axis=-1).reshape(r, 2 * r)   # m[h::step, 0::h]
        # each level compiled apart: fused across levels (and with the normalisation),
        # the compiled arithmetic, and so the last bit, depended on the batch size
        grid = separately(lambda e, o, r=r: jnp.stack([e, o], axis=1).reshape(2 * r, 2 * r),
                          even, odd)
        step //= 2
        wibble = wibble / decay
    m = grid - jnp.min(grid)
    return m / jnp.max(m)


def next_power_of_two(n: int) -> int:
    return 1 if n == 0 else 2 ** (n - 1).bit_length()


def _gray(x):
    return x if x.shape[-1] == 1 else _ops.rgb_to_gray(x)[..., None]


def _colour_layer(rgb_layer, channels):
    """An `(H, W, 3)` coloured layer as the image's channels (gray for 1 channel)."""
    return rgb_layer if channels == 3 else _ops.rgb_to_gray(rgb_layer, _LUMA)[..., None]


def snow(key, image, severity, *, table: str = tables.DEFAULT,
         reference_size: int | str | None = "table"):
    """ImageNet-C's `snow`: zoomed, thresholded Gaussian flakes streaked by motion blur.

    Flakes: `N(mean, std)` noise, `clipped_zoom` by `zoom` (flake size in pixels, not
    scaled), values below `threshold` cleared, motion-blurred at an angle uniform in
    [-135, -45] degrees and rounded to 8 bits; the image is lightened towards
    `max(x, 1.5 gray + 0.5)` and the flakes are added twice (the second copy rotated
    by 180 degrees). Severities 1-5: `tables.ROWS["snow"][table]`, (mean, std, zoom,
    threshold, streak radius px, streak sigma px, image weight).

    Args:
        key: a `jax.random` key.
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        severity: `0 <= severity <= 5`, may be fractional and traced.
        table: the benchmark's parameters (static).
        reference_size: image side the pixel parameters are for (static): "table"
            (the benchmark's), an int, or None (the published pixels at any size).
    """
    image, x, severity, ok = _ops.start(image, severity, "snow")
    H, W = x.shape[:2]
    rows = tables.rows("snow", table)
    scale = _ops.size_scale(image.shape, tables.reference_size(reference_size, table))
    mean, std, zoom, threshold, radius, sigma, weight = _ops.table_params(
        rows, jnp.maximum(severity, 1.0) - 1.0)
    k_flakes, k_angle = jax.random.split(key)
    flakes = mean + std * _prng.normal(k_flakes, (H, W, 1))
    flakes = _ops.clipped_zoom(flakes, zoom)
    flakes = jnp.clip(jnp.where(flakes < threshold, 0.0, flakes), 0.0, 1.0)
    angle = jax.random.uniform(k_angle, (), jnp.float32, -135.0, -45.0)
    max_radius = _ops.ceil_int(max(row[4] for row in rows) * scale)
    flakes = _ops.motion_blur_image(flakes, radius * scale, sigma * scale, angle, max_radius)
    flakes = jnp.round(flakes * 255.0) / 255.0
    lightened = weight * x + (1.0 - weight) * jnp.maximum(x, _gray(x) * 1.5 + 0.5)
    out = lightened + flakes + flakes[::-1, ::-1]
    return _ops.finish(_ops.blend_below_one(x, out, severity), ok, image)


def frost_texture(key, shape):
    """A procedural frost layer `(H, W, 3)` in [0, 1]: bluish-white ice veins.

    ImageNet-C overlays one of five photographs of frost; jaxrobust ships no images,
    so the layer is drawn: ridged plasma fractals (the veins of ice crystals, two
    scales) on a random overall brightness, tinted towards blue. Its statistics were
    matched to the photographs' (channel means about 0.57 / 0.66 / 0.70, spread about
    0.1 within an image).
    """
    H, W = shape
    size = next_power_of_two(max(H, W))
    k1, k2, k3 = jax.random.split(key, 3)
    coarse = plasma_fractal(k1, size, 1.6)[:H, :W]
    fine = plasma_fractal(k2, size, 1.2)[:H, :W]
    ridges = (1.0 - jnp.abs(2.0 * coarse - 1.0)) ** 3 + 0.6 * (1.0 - jnp.abs(2.0 * fine - 1.0)) ** 6
    veins = (ridges - jnp.mean(ridges)) / (jnp.std(ridges) + 1e-6)
    brightness = jax.random.uniform(k3, (), jnp.float32, 0.4, 0.8)
    tint = jnp.asarray([0.85, 0.94, 1.0], jnp.float32)[None, None, :]
    return jnp.clip(brightness * tint + 0.12 * veins[..., None], 0.0, 1.0)


def frost(key, image, severity, *, table: str = tables.DEFAULT):
    """ImageNet-C's `frost`: `a x + b frost_layer`, the layer procedural (see
    `frost_texture`). Severities 1-5: `tables.ROWS["frost"][table]` = (a, b).

    Args:
        key: a `jax.random` key.
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        severity: `0 <= severity <= 5`, may be fractional and traced.
        table: the benchmark's parameters (static).
    """
    image, x, severity, ok = _ops.start(image, severity, "frost")
    a, b = _ops.table_params(tables.rows("frost", table), jnp.maximum(severity, 1.0) - 1.0)
    layer = _colour_layer(frost_texture(key, x.shape[:2]), x.shape[-1])
    out = a * x + b * layer
    return _ops.finish(_ops.blend_below_one(x, out, severity), ok, image)


def fog(key, image, severity, *, table: str = tables.DEFAULT):
    """ImageNet-C's `fog`: a plasma fractal added, then the range compressed.

    `(x + s * plasma) * max(x) / (max(x) + s)`, the plasma fractal (diamond-square,
    `wibble decay` d) on the next power-of-two square cropped to the image (the
    generators' 32 / 64 / 256 map for their 32 / 64 / 224 pixels).
    Severities 1-5: `tables.ROWS["fog"][table]` = (s, d).

    Args:
        key: a `jax.random` key.
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        severity: `0 <= severity <= 5`, may be fractional and traced.
        table: the benchmark's parameters (static).
    """
    image, x, severity, ok = _ops.start(image, severity, "fog")
    H, W = x.shape[:2]
    strength, decay = _ops.table_params(tables.rows("fog", table),
                                        jnp.maximum(severity, 1.0) - 1.0)
    top = jnp.max(x)
    plasma = plasma_fractal(key, next_power_of_two(max(H, W)), decay)[:H, :W]
    out = (x + strength * plasma[..., None]) * top / (top + strength)
    return _ops.finish(_ops.blend_below_one(x, out, severity), ok, image)


@functools.partial(jax.jit, static_argnames="limit")  # eager calls: compiled once
def _distance_to(mask, limit: int):
    """Euclidean distance of every pixel to the nearest True of `mask`, capped at `limit`.

    Exact up to the cap: two passes of squared distances over a `2 limit + 1` window.
    """
    big = jnp.float32((limit + 1) ** 2)
    d2 = jnp.where(mask, 0.0, big)
    offsets = jnp.arange(-limit, limit + 1)

    def along(d, axis):
        def body(best, k):
            shifted = jnp.roll(d, k, axis=axis)
            idx = jnp.arange(d.shape[axis]) - k
            valid = (idx >= 0) & (idx < d.shape[axis])
            valid = valid[:, None] if axis == 0 else valid[None, :]
            return jnp.minimum(best, jnp.where(valid, shifted + k * k, big)), None

        return jax.lax.scan(body, d, offsets)[0]

    return jnp.minimum(jnp.sqrt(along(along(d2, 1), 0)), float(limit))


def _box3(x):
    return _ops.filter_separable(x, jnp.full((3,), 1 / 3), jnp.full((3,), 1 / 3), "mirror")


def _equalize(values):
    """OpenCV's `equalizeHist` of integer values 0..255 (float array), as floats."""
    v = values.astype(jnp.int32).reshape(-1)
    hist = jnp.zeros(256, jnp.float32).at[v].add(1.0)
    cdf = jnp.cumsum(hist)
    first = cdf[jnp.argmax(hist > 0)]
    lut = jnp.round((cdf - first) * 255.0 / jnp.maximum(v.size - first, 1.0))
    return lut[v].reshape(values.shape)


def spatter(key, image, severity, *, table: str = tables.DEFAULT,
            reference_size: int | str | None = "table"):
    """ImageNet-C's `spatter`: water drops (severities 1-3) or mud (4-5).

    A liquid layer `N(mean, std)` is Gaussian-blurred (`sigma`) and cleared below
    `threshold`. Water: the drops are shaded by an embossed, histogram-equalised
    distance to their edges and add pale turquoise (175, 238, 238) scaled by
    `intensity`. Mud: the drops, blurred by `intensity`, cover the image with brown
    (63, 42, 20) (the blur's sigma in pixels, scaled with size). Severities 1-5:
    `tables.ROWS["spatter"][table]`, (mean, std, sigma px, threshold, intensity or mud
    sigma px, mud); between a water and a mud severity the two are blended.

    Differences from `imagecorruptions` (documented choices): the drop edges are the
    boundary of the thresholded layer rather than Canny's edges of it, and the edge
    distance is exact Euclidean (capped at 20 pixels as there) rather than OpenCV's
    5x5 chamfer approximation.

    Args:
        key: a `jax.random` key.
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        severity: `0 <= severity <= 5`, may be fractional and traced.
        table: the benchmark's parameters (static).
        reference_size: image side the pixel parameters are for (static): "table"
            (the benchmark's), an int, or None (the published pixels at any size).
    """
    image, x, severity, ok = _ops.start(image, severity, "spatter")
    H, W, C = x.shape
    rows = tables.rows("spatter", table)
    scale = _ops.size_scale(image.shape, tables.reference_size(reference_size, table))
    mean, std, sigma, threshold, intensity, mud = _ops.table_params(
        rows, jnp.maximum(severity, 1.0) - 1.0)
    liquid = mean + std * _prng.normal(key, (H, W, 1))
    max_sigma = max(row[2] for row in rows) * scale
    liquid = _ops.gaussian_blur_image(liquid, sigma * scale, max_sigma)
    liquid = jnp.where(liquid < threshold, 0.0, liquid)

    # water
    wet = liquid[..., 0] > 0
    edges = wet & ~(jnp.roll(wet, 1, 0) & jnp.roll(wet, -1, 0)
                    & jnp.roll(wet, 1, 1) & jnp.roll(wet, -1, 1))
    dist = _distance_to(edges, 20)
    dist = jnp.floor(_box3(dist[..., None])[..., 0])
    dist = _equalize(dist)
    emboss = jnp.asarray([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], jnp.float32)
    dist = jnp.clip(jnp.round(_ops.fft_correlate(dist[..., None], emboss)), 0.0, 255.0)
    dist = _box3(dist)
    m = jnp.floor(liquid * 255.0) * dist
    m = m / jnp.maximum(jnp.max(m), 1e-6) * intensity
    water = jnp.asarray([175, 238, 238], jnp.float32)[None, None, :] / 255.0
    water_out = x + _colour_layer(jnp.clip(m * water, 0.0, 1.0), C)

    # mud
    drops = (liquid > threshold).astype(jnp.float32)
    max_mud = max(row[4] for row in rows if row[5])
    cover = _ops.gaussian_blur_image(drops, jnp.minimum(intensity, max_mud) * scale,
                                     max_mud * scale)
    cover = jnp.where(cover < 0.8, 0.0, cover)
    brown = jnp.asarray([63, 42, 20], jnp.float32)[None, None, :] / 255.0
    mud_out = x * (1.0 - cover) + _colour_layer(cover * brown, C)

    out = water_out + mud * (mud_out - water_out)
    return _ops.finish(_ops.blend_below_one(x, out, severity), ok, image)
