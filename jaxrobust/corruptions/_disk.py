"""Disk footprints as rows, exactly as `skimage.morphology.disk` builds them.

`disk_footprint(radius)` gives per row offset `dy` the column offsets `left .. right`
a disk covers, about the centre `scipy.ndimage` uses (index `size // 2`). A concrete
radius goes through skimage's `disk` itself; a traced float32 radius is computed on
device, repeating NumPy's `arange` arithmetic, with the inside test decided exactly by
error-free float32 transforms (TwoSum, Veltkamp splitting), so float radii such as
5.999999999999999 give the study's footprints.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxrobust._validation import is_traced

DEFAULT_MAX_RADIUS = 19


def _disk_rows_numpy(radius, extent: int) -> np.ndarray:
    """`disk_footprint` of a concrete radius, from `skimage.morphology.disk` itself."""
    from skimage.morphology import disk

    fp = np.asarray(disk(radius), bool)
    rows = np.tile(np.array([[1, 0]], np.int32), (2 * extent + 1, 1))  # empty rows
    c = fp.shape[0] // 2
    for j in range(fp.shape[0]):
        cols = np.nonzero(fp[j])[0]
        if len(cols):
            rows[j - c + extent] = cols[0] - c, cols[-1] - c
    return rows


def _two_sum(a, b):
    """`a + b` as `(s, e)` with `s + e` exact (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a):
    """float32 `a` as `hi + lo` with 12 significant bits each (Veltkamp)."""
    c = 4097.0 * a
    hi = c - (c - a)
    return hi, a - hi


def _exact_sign(terms):
    """Sign of the exact sum of float32 arrays (Shewchuk's grow-expansion)."""
    expansion = []
    for t in terms:
        q, grown = t, []
        for comp in expansion:
            q, h = _two_sum(q, comp)
            grown.append(h)
        expansion = grown + [q]
    sign = jnp.zeros_like(terms[0])
    for comp in expansion:  # smallest to largest: the largest nonzero decides
        sign = jnp.where(comp != 0, jnp.sign(comp), sign)
    return sign


def _disk_rows_traced(radius, extent: int):
    """`disk_footprint` of a traced radius, computed on device.

    Repeats what NumPy and scikit-image compute for a radius of that dtype:

    * float32 (NumPy 2): `np.arange(-r, r + 1)` is float64 with `ceil((r + 1) + r)`
      entries (that length rounded in float32), `i - r`, all exact, and `r**2` is
      rounded to float32, so a point is inside when `(i - r)**2 + (j - r)**2 <=
      fl32(r * r)` exactly: decided here with error-free float32 transforms.
    * float64 (x64 enabled): every operation rounded in float64, as NumPy does:
      `delta = (start + 1) - start`, entries `start + i * delta` (entry 1 is `start +
      1` itself), `x * x + y * y <= r * r`.
    """
    r = radius
    dt = r.dtype
    i = jnp.arange(2 * extent + 2)
    dy = jnp.arange(-extent, extent + 1)
    if dt == jnp.float32:
        n = jnp.ceil((r + 1.0) + r).astype(jnp.int32)  # NumPy's length, in float32
        c = n // 2
        j = dy + c
        x = i.astype(dt) - r  # exact: |x| < 2 ** 24 ulp(r)
        y = x[jnp.clip(j, 0, 2 * extent + 1)]
        xh, xl = _split(x[None, :])
        yh, yl = _split(y[:, None])
        terms = [xh * xh, 2.0 * xh * xl, xl * xl, yh * yh, 2.0 * yh * yl, yl * yl, -(r * r)]
        terms = [jnp.broadcast_to(t, (len(dy), len(i))) for t in terms]
        within = _exact_sign(terms) <= 0
    else:
        one = jnp.ones((), dt)
        start = -r
        second = start + one
        delta = second - start
        n = jnp.ceil((r + one) - start).astype(jnp.int32)
        x = start + i.astype(dt) * delta
        x = jnp.where(i == 1, second, jnp.where(i == 0, start, x))
        c = n // 2
        j = dy + c
        y = x[jnp.clip(j, 0, 2 * extent + 1)]
        within = (x * x)[None, :] + (y * y)[:, None] <= r * r
    inside = within & (i[None, :] < n) & ((j >= 0) & (j < n))[:, None]
    col = (i - c)[None, :]
    big = 4 * extent + 4
    left = jnp.min(jnp.where(inside, col, big), axis=1)
    right = jnp.max(jnp.where(inside, col, -big), axis=1)
    empty = left > right
    return jnp.stack([jnp.where(empty, 1, left), jnp.where(empty, 0, right)], -1).astype(
        jnp.int32)


def disk_footprint(radius, max_radius: int = 19):
    """The rows of `skimage.morphology.disk(radius)` as `scipy.ndimage` places it.

    `disk(r)` is `X**2 + Y**2 <= r**2` on the grid `np.arange(-r, r + 1)`, evaluated in
    `r`'s own dtype, and `scipy.ndimage` (hence `skimage.filters.median`) aligns its
    element `size // 2` with the output pixel. A whole radius gives the familiar
    symmetric disk; a float one may lose boundary points, or be even-sized and sit one
    pixel off-centre (`disk(16.000000000000004)` is 34 x 34).

    Args:
        radius: a float radius in `[0, max_radius + 0.5]`. A concrete one (a Python or
            NumPy number) is evaluated by scikit-image itself, in its own precision
            (float64 for a Python float); a traced one on device, in its dtype
            (float32 unless x64 is enabled), operation for operation as NumPy does.
        max_radius: the static bound; the footprint fits in offsets
            `-(max_radius + 1) .. max_radius + 1`.

    Returns:
        int32 `(2 * max_radius + 3, 2)`: for row offset `dy` (index `dy + max_radius +
        1`) the column offsets `left, right` it covers; `left > right` for an empty row.
        Pass it to `median_blur` as the level to filter with exactly this footprint (a
        traced footprint keeps a float64 radius exact where a traced float32 would
        round it).
    """
    extent = int(max_radius) + 1
    if is_traced(radius):
        return _disk_rows_traced(jnp.asarray(radius), extent)
    value = np.asarray(radius)
    if value.ndim != 0 or value.dtype.kind not in "fiu":
        raise ValueError(f"disk_footprint: radius must be a real scalar, got {radius!r}.")
    if value.dtype.kind != "f":
        value = value.astype(np.float64)
    if not (0 <= value <= max_radius + 0.5):
        raise ValueError(f"disk_footprint: radius must lie in [0, {max_radius + 0.5:g}] "
                         f"(max_radius {max_radius} + 0.5), got {float(value)!r}.")
    return jnp.asarray(_disk_rows_numpy(value[()], extent))


def _footprint_stats(rows):
    """`(left, right, inside, rank, extent)` of `(..., D, 2)` rows (D = 2E + 1)."""
    left, right = rows[..., 0], rows[..., 1]
    inside = left <= right
    n = jnp.sum(jnp.where(inside, right - left + 1, 0), axis=-1)
    E = (rows.shape[-2] - 1) // 2
    dy = jnp.broadcast_to(jnp.abs(jnp.arange(-E, E + 1)), left.shape)
    reach = jnp.max(jnp.where(inside, jnp.maximum(dy, jnp.maximum(-left, right)), 0), axis=-1)
    return left, right, inside, n // 2, n, reach
