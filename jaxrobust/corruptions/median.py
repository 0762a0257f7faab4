"""Median blur with a disk footprint, bit-exact to scikit-image.

`median_blur(key, image, radius)` equals
`skimage.filters.median(image[..., c], skimage.morphology.disk(radius), mode='nearest')`
channel by channel, bit for bit, for 8-bit-valued and for arbitrary float32 images.
The radius may be traced: one compiled program serves every radius up to the static
`max_radius`.

Two exact algorithms share the work; both pick the rank-`n // 2` element (`n` the
disk's pixel count, always odd) of each pixel's disk on an edge-padded copy:

* **8-bit-valued planes** (every value is one of at most 256 levels `k / 255`, as
  uint8 data scaled to [0, 1] are) take Huang's sliding histogram: the image rows are
  vector lanes, the window slides along x adding the disk's entering and removing its
  leaving pixels (one scatter-add each), and the median is tracked from the previous
  column by walking the histogram.
* **Any other float plane** is mapped to order-preserving integer codes (each value's
  index in the sorted plane), and the median code is found by a radix descent on a
  wavelet matrix of every padded row: at each bit the disk's rows are counted in
  O(1) per row with prefix counts, so the cost is `bits * (2 * max_radius + 1)` per
  pixel. The median code maps back to the original value, so the result is exact.

Which path runs is decided on device for a whole batch at once (a `lax.cond`, not a
per-image select): `jax.vmap` of the kernel is given a custom batching rule that
folds every vmapped axis into one flat batch of planes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

from jaxrobust._validation import check_image, check_level

DEFAULT_MAX_RADIUS = 19


def disk_row_widths(radius, max_radius: int):
    """Half-widths of the rows of `skimage.morphology.disk(radius)`.

    Args:
        radius: integer radius, may be traced; `0 <= radius <= max_radius`.
        max_radius: static bound that sizes the output.

    Returns:
        `(half_width, inside)`, both of shape `(2 * max_radius + 1,)` indexed by the
        row offset `dy + max_radius`: row `dy` of the disk covers columns
        `-half_width[dy] .. half_width[dy]` when `inside[dy]`, and nothing otherwise.
        `disk(r)` holds the points with `dx**2 + dy**2 <= r**2`.
    """
    dy = jnp.arange(-max_radius, max_radius + 1, dtype=jnp.int32)
    room = radius * radius - dy * dy
    w = jnp.floor(jnp.sqrt(jnp.maximum(room, 0).astype(jnp.float32))).astype(jnp.int32)
    # integer square root: fix the float estimate by one in either direction
    w = jnp.where((w + 1) * (w + 1) <= room, w + 1, w)
    w = jnp.where(w * w > room, w - 1, w)
    return jnp.maximum(w, 0), room >= 0


def _rank_and_size(radius, max_radius):
    w, inside = disk_row_widths(radius, max_radius)
    n = jnp.sum(jnp.where(inside, 2 * w + 1, 0))
    return w, inside, n // 2


# --------------------------------------------------------------------------------------
# 8-bit path: Huang's sliding histogram, rows as lanes.
# --------------------------------------------------------------------------------------

_BINS = 257  # 256 levels + one sink bin for the rows outside the disk


def _huang_plane(codes, radius, max_radius: int):
    """Median of one `(H, W)` int32 plane of codes in [0, 255]."""
    R = max_radius
    H, W = codes.shape
    p = jnp.pad(codes, R, mode="edge")
    w, inside, k = _rank_and_size(radius, R)
    lanes = jnp.arange(H)
    offsets = jnp.arange(-R, R + 1)

    # Histogram of the disk around column 0 of every row.
    in_disk = inside[:, None] & (jnp.abs(offsets)[None, :] <= w[:, None])  # (D, D)
    window = jnp.stack([p[R + dy: R + dy + H, 0: 2 * R + 1] for dy in range(-R, R + 1)], 1)
    window = jnp.where(in_disk[None], window, _BINS - 1)  # (H, D, D)
    flat = (lanes[:, None, None] * _BINS + window).reshape(-1)
    hist = jnp.zeros((H * _BINS,), jnp.int32).at[flat].add(1).reshape(H, _BINS)
    below = jnp.cumsum(hist[:, :256], axis=1)
    med = jnp.sum(below <= k, axis=1).astype(jnp.int32)
    prev = jnp.take_along_axis(below, jnp.maximum(med - 1, 0)[:, None], 1)[:, 0]
    lt = jnp.where(med > 0, prev, 0)

    # Values entering (right edge) and leaving (left edge) as the window moves to x.
    def edge(dy, start):
        col = lax.dynamic_slice(p, (R + dy, start), (H, W - 1))
        return col
    enter = jnp.stack([edge(dy, R + w[dy + R] + 1) for dy in range(-R, R + 1)], 0)
    leave = jnp.stack([edge(dy, R - w[dy + R]) for dy in range(-R, R + 1)], 0)
    enter = jnp.where(inside[:, None, None], enter, _BINS - 1)  # (D, H, W-1)
    leave = jnp.where(inside[:, None, None], leave, _BINS - 1)
    moves = jnp.concatenate([enter, leave], 0).transpose(2, 1, 0)  # (W-1, H, 2D)
    D = 2 * R + 1
    sign = jnp.concatenate([jnp.ones((D,), jnp.int32), -jnp.ones((D,), jnp.int32)])
    lane_base = (lanes * _BINS)[:, None]

    def count_at(hist_flat, med):
        return hist_flat[lanes * _BINS + med]

    def track(hist, med, lt):
        hist_flat = hist.reshape(-1)

        def too_high(s):
            return jnp.any(s[1] > k)

        def step_down(s):
            med, lt = s
            move = lt > k
            med = jnp.where(move, med - 1, med)
            return med, jnp.where(move, lt - count_at(hist_flat, med), lt)

        med, lt = lax.while_loop(too_high, step_down, (med, lt))

        def too_low(s):
            return jnp.any(s[1] + count_at(hist_flat, s[0]) <= k)

        def step_up(s):
            med, lt = s
            here = count_at(hist_flat, med)
            move = lt + here <= k
            return jnp.where(move, med + 1, med), jnp.where(move, lt + here, lt)

        return lax.while_loop(too_low, step_up, (med, lt))

    def slide(carry, values):
        hist, med, lt = carry
        hist = hist.reshape(-1).at[(lane_base + values).reshape(-1)].add(
            jnp.broadcast_to(sign, values.shape).reshape(-1)
        ).reshape(H, _BINS)
        lt = lt + jnp.sum(jnp.where(values < med[:, None], sign, 0), axis=1)
        med, lt = track(hist, med, lt)
        return (hist, med, lt), med

    _, meds = lax.scan(slide, (hist, med, lt), moves)
    return jnp.concatenate([med[:, None], meds.T], axis=1)


def _median_8bit(planes, radius, max_radius):
    """(B, H, W) float planes whose values are 8-bit levels -> exact medians."""
    codes = jnp.clip(jnp.round(planes * 255.0), 0, 255).astype(jnp.int32)
    # The float value of each code, taken from the image itself so that the output
    # is bit-identical to the input's values whatever rounding produced them.
    lut = jax.vmap(lambda c, x: jnp.zeros((256,), x.dtype).at[c.reshape(-1)].max(x.reshape(-1)))(
        codes, planes
    )
    med = jax.vmap(functools.partial(_huang_plane, max_radius=max_radius))(codes, radius)
    return jnp.take_along_axis(lut, med.reshape(med.shape[0], -1), axis=1).reshape(planes.shape)


def _is_8bit(planes):
    codes = jnp.clip(jnp.round(planes * 255.0), 0, 255).astype(jnp.int32)
    lut = jax.vmap(lambda c, x: jnp.zeros((256,), x.dtype).at[c.reshape(-1)].max(x.reshape(-1)))(
        codes, planes
    )
    back = jnp.take_along_axis(lut, codes.reshape(codes.shape[0], -1), axis=1)
    return jnp.all(back == planes.reshape(planes.shape[0], -1))


# --------------------------------------------------------------------------------------
# General path: radix descent on per-row wavelet matrices.
# --------------------------------------------------------------------------------------


def _wavelet_plane(codes, radius, max_radius: int, bits: int):
    """Median of one `(H, W)` int32 plane of codes in [0, 2**bits)."""
    R = max_radius
    H, W = codes.shape
    p = jnp.pad(codes, R, mode="edge")
    Hp, Wp = p.shape
    w, inside, k = _rank_and_size(radius, R)

    # Per level (top bit first): zeros[b][row, i] = number of 0 bits among the first i
    # elements of that row's sequence at level b; the next level's sequence is the
    # stable partition (zeros first).
    zeros = []
    seq = p
    positions = jnp.arange(Wp, dtype=jnp.int32)[None, :]
    for b in range(bits - 1, -1, -1):
        bit = (seq >> b) & 1
        z = jnp.cumsum(1 - bit, axis=1, dtype=jnp.int32)
        zeros.append(jnp.concatenate([jnp.zeros((Hp, 1), jnp.int32), z], axis=1))
        total = z[:, -1:]
        dest = jnp.where(bit == 0, z - 1, total + positions - z)
        rows = jnp.broadcast_to(jnp.arange(Hp)[:, None], (Hp, Wp))
        seq = jnp.zeros_like(seq).at[rows, dest].set(seq, unique_indices=True)

    dy = jnp.arange(-R, R + 1)
    row = jnp.arange(H)[None, :, None] + dy[:, None, None] + R  # (D, H, 1)
    x = jnp.arange(W)[None, None, :]
    lo = jnp.broadcast_to(x + R - w[:, None, None], (2 * R + 1, H, W))
    hi = jnp.where(inside[:, None, None], x + R + w[:, None, None] + 1, lo)
    row_base = row * (Wp + 1)
    rank = jnp.full((H, W), k, jnp.int32)
    med = jnp.zeros((H, W), jnp.int32)
    for level, b in enumerate(range(bits - 1, -1, -1)):
        table = zeros[level]
        flat = table.reshape(-1)
        z_lo = flat[row_base + lo]
        z_hi = flat[row_base + hi]
        n_zero = jnp.sum(z_hi - z_lo, axis=0)
        one = rank >= n_zero
        rank = jnp.where(one, rank - n_zero, rank)
        med = med | (one.astype(jnp.int32) << b)
        total = table[:, -1][row]  # (D, H, 1)
        lo = jnp.where(one[None], total + lo - z_lo, z_lo)
        hi = jnp.where(one[None], total + hi - z_hi, z_hi)
    return med


def _median_general(planes, radius, max_radius):
    B, H, W = planes.shape
    bits = max(1, math.ceil(math.log2(H * W)))
    flat = planes.reshape(B, -1)
    ordered = jnp.sort(flat, axis=1)
    codes = jax.vmap(lambda s, v: jnp.searchsorted(s, v, side="left"))(ordered, flat)
    codes = codes.astype(jnp.int32).reshape(B, H, W)
    plane_fn = functools.partial(_wavelet_plane, max_radius=max_radius, bits=bits)
    med = jax.vmap(plane_fn)(codes, radius)
    return jnp.take_along_axis(ordered, med.reshape(B, -1), axis=1).reshape(B, H, W)


@functools.partial(jax.jit, static_argnums=2)
def _median_planes(planes, radius, max_radius):
    return lax.cond(
        _is_8bit(planes),
        functools.partial(_median_8bit, max_radius=max_radius),
        functools.partial(_median_general, max_radius=max_radius),
        planes,
        radius,
    )


@functools.cache
def _batched_median(max_radius: int):
    """A `(B, H, W), (B,) -> (B, H, W)` median whose vmap folds into its batch axis."""

    @custom_vmap
    def median(planes, radius):
        return _median_planes(planes, radius, max_radius)

    @median.def_vmap
    def _fold(axis_size, in_batched, planes, radius):
        planes_batched, radius_batched = in_batched
        if not planes_batched:
            planes = jnp.broadcast_to(planes, (axis_size,) + planes.shape)
        if not radius_batched:
            radius = jnp.broadcast_to(radius, (axis_size,) + radius.shape)
        out = median(planes.reshape((-1,) + planes.shape[2:]), radius.reshape(-1))
        return out.reshape(planes.shape), True

    return median


def median_blur(key, image, radius, *, max_radius: int = DEFAULT_MAX_RADIUS):
    """Median over a disk footprint, bit-exact to scikit-image.

    Matches `skimage.filters.median(image[..., c], skimage.morphology.disk(radius),
    mode='nearest')` for every channel `c`, bit for bit.

    Args:
        key: unused (the kernel is deterministic); kept for the kernel signature.
        image: `(H, W, C)` float image in [0, 1].
        radius: disk radius in pixels, an integer in `[0, max_radius]` (a float is
            rounded to the nearest integer). May be traced: every radius shares one
            compiled program. A traced radius out of range gives an all-NaN image.
        max_radius: static largest radius; the cost grows with it.

    Returns:
        The filtered `(H, W, C)` image, same dtype as `image`.
    """
    del key
    image = check_image(image, fn="median_blur")
    if int(max_radius) != max_radius or max_radius < 0:
        raise ValueError(f"median_blur: max_radius must be a non-negative int, got {max_radius}.")
    radius, ok = check_level(
        radius, fn="median_blur", what="disk radius in pixels", low=0, high=max_radius
    )
    r = jnp.clip(jnp.round(radius), 0, max_radius).astype(jnp.int32)
    H, W, C = image.shape
    planes = jnp.moveaxis(image, -1, 0)
    out = _batched_median(int(max_radius))(planes, jnp.broadcast_to(r, (C,)))
    out = jnp.moveaxis(out, 0, -1)
    return jnp.where(ok, out, jnp.nan).astype(image.dtype)
