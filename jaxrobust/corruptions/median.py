"""Median blur with a disk footprint, bit-exact to scikit-image.

`median_blur(key, image, radius)` equals
`skimage.filters.median(image[..., c], skimage.morphology.disk(radius), mode='nearest')`
channel by channel, bit for bit, for 8-bit-valued and for arbitrary float32 images, and
for every float radius, not only whole ones. `disk(r)` of a float `r` is what the
corruption study ran (its loop fed `disk` radii such as 5.999999999999999): the grid is
`np.arange(-r, r + 1)`, so such a disk can lose boundary points, or be even-sized and
one pixel off-centre. The kernel works from the footprint's rows (`disk_footprint`):
per row offset `dy` the column offsets `left .. right` it covers, about the centre
`scipy.ndimage` uses (index `size // 2`). The radius, or the footprint itself, may be
traced: one compiled program serves every radius up to the static `max_radius`.

Three exact algorithms share the work; each picks the rank-`n // 2` element (`n` the
footprint's pixel count) of each pixel's footprint on an edge-padded copy:

* **8-bit-valued planes** (every value is one of at most 256 levels `k / 255`, as
  uint8 data scaled to [0, 1] are) take Huang's sliding histogram: the image columns
  are vector lanes, the window slides down adding the disk's entering and removing its
  leaving pixels (one scatter-add per step), and each step finds the median through
  16 coarse and 16 fine bins.
* **Small footprints** (inside `disk(3)`) of any float plane go through a sorting
  network: the smallest of 1 (disk(0): the identity), 8, 16 or 32 inputs that holds
  the batch's footprints.
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
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap

from jaxrobust._fusion import separately
from jaxrobust._validation import check_image, check_level, is_traced
from jaxrobust.corruptions._disk import DEFAULT_MAX_RADIUS, _footprint_stats, disk_footprint
from jaxrobust.corruptions._ops import finish

# --------------------------------------------------------------------------------------
# 8-bit path: Huang's sliding histogram, columns as lanes.
# --------------------------------------------------------------------------------------

#: Planes processed together by one sliding-histogram pass; small chunks keep the
#: histograms in cache.
_CHUNK = 2
#: Static radius buckets of the 8-bit path: a call whose largest radius is r runs the
#: smallest bucket >= r, since the cost grows with the bucket (2 * bucket + 1 updates
#: per pixel).
_BUCKETS = (5, 10, 15)


def _columns(rows):
    """Column extents of `(P, D, 2)` footprint rows: per column offset `dx`, the row
    offsets `top .. bottom` it covers (`(1, 0)` for an empty column), `(P, D, 2)`.

    The footprint is the same set of points seen column by column; exact for every
    footprint whose columns are contiguous runs, as every disk's are."""
    D = rows.shape[-2]
    E = (D - 1) // 2
    left, right = rows[..., 0], rows[..., 1]
    shape = left.shape + (D,)  # (P, dy, dx)
    dx = lax.broadcasted_iota(jnp.int32, shape, left.ndim) - E
    dy = lax.broadcasted_iota(jnp.int32, shape, left.ndim - 1) - E
    member = (left[..., None] <= dx) & (dx <= right[..., None])
    top = jnp.min(jnp.where(member, dy, E + 1), axis=-2)
    bottom = jnp.max(jnp.where(member, dy, -E - 1), axis=-2)
    empty = top > bottom
    return jnp.stack([jnp.where(empty, 1, top), jnp.where(empty, 0, bottom)], -1)


def _huang_planes(codes, rows, max_radius: int):
    """Medians of `(P, H, W)` int32 code planes in [0, 255] with footprints `(P, D, 2)`.

    `rows` are `disk_footprint` rows cut to offsets `-max_radius .. max_radius`
    (`D = 2 * max_radius + 1`).

    Every image column of every plane is a lane (`L = P * W`) with its own 256-bin
    int16 histogram, stored bins-major (`bin * L + lane`) so that the search runs across
    lanes as plain vector arithmetic. The window starts around row 0 and slides down:
    each step adds the `2R + 1` entering and removes the `2R + 1` leaving pixels (one
    per footprint column) with one flat scatter-add (the columns a footprint leaves
    out are skipped), then finds the rank-`k` bin through 16 coarse bins and the 16 fine
    bins of the chosen coarse bin, with no data-dependent loop.

    Columns as lanes, not rows: the moving pixels of one footprint column are, across
    lanes, a contiguous run of an image row, so they are cut out of the padded uint8
    plane by one gather of contiguous slices, laid out step-major before the scan.
    (With rows as lanes they are a strided column: XLA folded the transpose meant to
    make them contiguous into a layout and gathered byte by byte, ~3x slower.)
    """
    R = max_radius
    P, H, W = codes.shape
    L = P * W
    D = 2 * R + 1
    p = jnp.pad(codes.astype(jnp.uint8), ((0, 0), (R, R), (R, R)), mode="edge")
    top, bottom, inside, rank, _, _ = _footprint_stats(_columns(rows))  # (P, D) x3, (P,)
    k = jnp.broadcast_to(rank[:, None], (P, W)).reshape(L).astype(jnp.int16)
    offsets = jnp.arange(D)
    lane = jnp.arange(L, dtype=jnp.int32)

    def cut(y0, n):
        """`p[i, y0[i, d] + y, d + x]` as `(n, D, P, W)`: one gather of row slices (the
        `D * P` slices written out are as many ops for XLA to compile). Every slice
        lies inside `p`: no clamping."""
        index = jnp.stack([jnp.broadcast_to(jnp.arange(P), (D, P)), y0.T,
                           jnp.broadcast_to(offsets[:, None], (D, P))], -1)  # (D, P, 3)
        dims = lax.GatherDimensionNumbers(offset_dims=(0, 3), collapsed_slice_dims=(0,),
                                          start_index_map=(0, 1, 2))
        return lax.gather(p, index, dims, slice_sizes=(1, n, W),
                          mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)

    dims = lax.ScatterDimensionNumbers(update_window_dims=(), inserted_window_dims=(0,),
                                       scatter_dims_to_operand_dims=(0,))

    def add(hist, idx, weight):
        # a plain scatter-add of flat positions (`hist.at[idx]` would also wrap
        # negative indices: one more pass, along a minor axis of 1)
        return lax.scatter_add(hist, idx.reshape(-1, 1), weight, dims,
                               mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)

    # Histogram of every lane's footprint around row 0: on the edge-padded plane column
    # dx covers image rows max(top, 0) .. bottom, row 0 once for every offset
    # top .. min(bottom, 0).
    steps = jnp.arange(R + 1).reshape(R + 1, 1, 1)
    lo, hi = top.T[None], bottom.T[None]  # (1, D, P)
    weight = jnp.where(steps == 0, jnp.maximum(jnp.minimum(hi, 0) - lo + 1, 0),
                       (steps >= lo) & (steps <= hi))  # (R + 1, D, P)
    window = cut(jnp.full((P, D), R), R + 1)  # (R + 1, D, P, W)
    weight = separately(lambda wt: jnp.broadcast_to(wt[..., None].astype(jnp.int16),
                                                     window.shape).reshape(-1), weight)
    window = separately(lambda w: w.astype(jnp.int32) * L + lane.reshape(1, 1, P, W), window)
    hist = add(jnp.zeros((256 * L,), jnp.int16), window, weight)

    # The search is written as unrolled elementwise steps over (16, L) / (L,) slices
    # rather than reductions and a gather: XLA's CPU backend vectorises these across
    # the lanes (measured ~1.7x faster for the whole filter at radius 19). The coarse
    # bin is computed apart (`separately`): fused into the (16, L) selection below, XLA
    # recomputed it for each of the 16 fine bins (~15 % of the filter at radius 19).
    def coarse(count):  # (16, L) -> the median's coarse bin, pixels before it
        run = jnp.zeros((L,), jnp.int16)
        c = jnp.zeros((L,), jnp.int16)  # the median's coarse bin
        below = jnp.zeros((L,), jnp.int16)  # pixels in the coarse bins before it
        for j in range(16):
            run = run + count[j]
            ok = run <= k
            c = c + ok.astype(jnp.int16)
            below = jnp.where(ok, run, below)
        return c, below

    def find(hist):
        fine = hist.reshape(16, 16, L)  # (coarse bin, fine bin, lane)
        count = fine[:, 0]
        for j in range(1, 16):
            count = count + fine[:, j]  # (16, L): pixels per coarse bin
        c, below = separately(coarse, count)
        row = fine[0]
        for j in range(1, 16):
            row = jnp.where((c == j)[None], fine[j], row)  # (16, L): fine bins of c
        run = below
        f = jnp.zeros((L,), jnp.int16)
        for j in range(16):
            run = run + row[j]
            f = f + (run <= k).astype(jnp.int16)
        return c.astype(jnp.int32) * 16 + f.astype(jnp.int32)

    # The pixels entering (row y + bottom) and leaving (row y - 1 + top) each column of
    # the footprint as the window moves from y - 1 to y, for y = 1 .. H - 1: uint8
    # codes, one contiguous (2D * L) row per step, turned into positions in the step
    # (a quarter of the memory of int32 positions). Empty columns move nothing: their
    # sign is 0 and their position lies past the histogram (skipped); their slices are
    # kept in range.
    moves = jnp.concatenate([cut(R + jnp.where(inside, bottom, 0) + 1, H - 1),
                             cut(R + jnp.where(inside, top, 0), H - 1)], 1)
    moves = moves.reshape(H - 1, 2 * D * L)
    sign = jnp.concatenate([jnp.ones((D,), jnp.int16), -jnp.ones((D,), jnp.int16)])
    signs = jnp.where(jnp.concatenate([inside, inside], 1), sign, 0).astype(jnp.int16)
    signs = separately(lambda s: jnp.broadcast_to(s.T[:, :, None], (2 * D, P, W)).reshape(-1),
                       signs)
    lanes = lax.broadcasted_iota(jnp.int32, (2 * D, L), 1)  # computed in the step's loop

    def slide(hist, codes):
        # a column the footprint leaves out gets a position past the end, which the
        # scatter skips (a compare) instead of adding zero (a read-modify-write)
        idx = jnp.where(signs.reshape(2 * D, L) != 0,
                        codes.reshape(2 * D, L).astype(jnp.int32) * L + lanes, 256 * L)
        hist = lax.scatter_add(hist, idx.reshape(-1, 1), signs, dims,
                               mode=lax.GatherScatterMode.FILL_OR_DROP)
        return hist, find(hist)

    # (the first row's search apart: searched before the update inside the step, XLA
    # copied the histogram twice per step to keep it for the search)
    first = find(hist)
    _, meds = lax.scan(slide, hist, moves)  # (H - 1, L)
    return separately(lambda a, m: jnp.concatenate([a[None], m]).reshape(H, P, W)
                      .transpose(1, 0, 2), first, meds)


def _huang_chunked(codes, rows, max_radius: int):
    P = codes.shape[0]
    E = (rows.shape[1] - 1) // 2
    rows = rows[:, E - max_radius: E + max_radius + 1]
    pad = (-P) % _CHUNK
    if pad:
        codes = jnp.concatenate([codes, jnp.broadcast_to(codes[:1], (pad,) + codes.shape[1:])])
        rows = jnp.concatenate([rows, jnp.broadcast_to(rows[:1], (pad,) + rows.shape[1:])])
    out = lax.map(
        lambda args: _huang_planes(*args, max_radius=max_radius),
        (codes.reshape((-1, _CHUNK) + codes.shape[1:]),
         rows.reshape((-1, _CHUNK) + rows.shape[1:])),
    )
    return out.reshape((-1,) + codes.shape[1:])[:P]


def _median_8bit(planes, rows, codes, lut):
    """(P, H, W) float planes whose values are 8-bit levels -> exact medians, from their
    `_codes_and_lut`.

    The sliding histogram runs at the smallest static reach that holds every plane's
    footprint: the buckets 5, 10, 15, or the full reach, the largest whole radius plus one
    (the float radii whose disk is even-sized reach one pixel further on one side).
    Each bucket is a copy of the filter to compile, so there are few
    (docs/architecture.md has the trade measured).
    """
    E = (rows.shape[1] - 1) // 2
    buckets = [b for b in _BUCKETS if b < E] + [E]
    branches = [functools.partial(_huang_chunked, max_radius=b) for b in buckets]
    which = jnp.searchsorted(jnp.asarray(buckets), jnp.max(_footprint_stats(rows)[-1]))
    med = lax.switch(which, branches, codes, rows)
    return jnp.take_along_axis(lut, med.reshape(med.shape[0], -1), axis=1).reshape(planes.shape)


def _codes_and_lut(planes):
    """8-bit codes `round(255 x)` of `(P, H, W)` planes, and each plane's code -> value table.

    The values come from the image itself, so that a median code maps back to a value
    bit-identical to the input's whatever rounding produced the 8-bit levels.
    """
    codes = jnp.clip(jnp.round(planes * 255.0), 0, 255).astype(jnp.int32)
    lut = jax.vmap(lambda c, x: jnp.zeros((256,), x.dtype).at[c.reshape(-1)].max(x.reshape(-1)))(
        codes, planes
    )
    return codes, lut


def _is_8bit(planes, codes, lut):
    """Whether every plane's values are reproduced exactly by their 8-bit codes."""
    back = jnp.take_along_axis(lut, codes.reshape(codes.shape[0], -1), axis=1)
    return jnp.all(back == planes.reshape(planes.shape[0], -1))


# --------------------------------------------------------------------------------------
# Small radii: a sorting network over the disk's pixels (any float values).
# --------------------------------------------------------------------------------------

#: Sorting networks for small footprints, `(R, S)`: a footprint inside disk(R) goes
#: through an S-input Batcher network over disk(R)'s pixels (1, 5, 13 and 29 of them);
#: XLA drops the comparators the middle output does not need. The smallest that holds
#: a batch's footprints runs (radius 1 took ~1/3 of the time through the 32-input one).
_NETWORKS = ((0, 1), (1, 8), (2, 16), (3, 32))


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort for `n` (a power of two) inputs."""

    def merge(lo, hi, r):
        step = r * 2
        if step < hi - lo:
            yield from merge(lo, hi, step)
            yield from merge(lo + r, hi, step)
            yield from ((i, i + r) for i in range(lo + r, hi - r, step))
        else:
            yield (lo, lo + r)

    def sort(lo, hi):
        if hi - lo >= 1:
            mid = lo + (hi - lo) // 2
            yield from sort(lo, mid)
            yield from sort(mid + 1, hi)
            yield from merge(lo, hi, 1)

    return list(sort(0, n - 1))


def _network_planes(planes, rows, radius: int, size: int):
    """Exact medians of `(P, H, W)` float planes whose footprints lie inside
    disk(`radius`), by a `size`-input network.

    disk(`radius`)'s pixels are the network's inputs; of those outside a plane's
    footprint and the spare inputs, the first `size // 2 - n // 2` become -inf and the
    rest +inf, so that the rank-`n // 2` element of the `n` footprint pixels always
    lands at sorted position `size // 2`.
    """
    R = radius
    P, H, W = planes.shape
    E = (rows.shape[1] - 1) // 2
    left, right, inside, rank, _, _ = _footprint_stats(rows)
    p = jnp.pad(planes, ((0, 0), (R, R), (R, R)), mode="edge")
    offsets = [(dy, dx) for dy in range(-R, R + 1) for dx in range(-R, R + 1)
               if dy * dy + dx * dx <= R * R]
    member = [inside[:, E + dy] & (left[:, E + dy] <= dx) & (dx <= right[:, E + dy])
              for dy, dx in offsets] + [jnp.zeros((P,), bool)] * (size - len(offsets))
    member = jnp.stack(member, 1)  # (P, size)
    outside = jnp.cumsum(~member, axis=1) - 1  # index of each filler among the fillers
    low = (~member) & (outside < (size // 2 - rank)[:, None])
    values = [p[:, R + dy: R + dy + H, R + dx: R + dx + W] for dy, dx in offsets]
    values += [planes] * (size - len(offsets))
    values = [jnp.where(member[:, t, None, None], v,
                        jnp.where(low[:, t, None, None], -jnp.inf, jnp.inf))
              for t, v in enumerate(values)]
    for i, j in _batcher_pairs(size):
        values[i], values[j] = jnp.minimum(values[i], values[j]), jnp.maximum(values[i], values[j])
    return values[size // 2]


def _fits_network(rows, radius: int):
    """Whether every footprint lies inside disk(`radius`) (a network's inputs)."""
    E = (rows.shape[-2] - 1) // 2
    dy = jnp.arange(-E, E + 1)
    left, right, inside, _, _, _ = _footprint_stats(rows)
    room = jnp.where(jnp.abs(dy) <= radius,
                     jnp.floor(jnp.sqrt(jnp.maximum(radius * radius - dy * dy, 0)
                                        .astype(jnp.float32))), -1)
    room = jnp.broadcast_to(room, left.shape)
    ok = ~inside | ((-left <= room) & (right <= room))
    return jnp.all(ok)


# --------------------------------------------------------------------------------------
# General path: radix descent on per-row wavelet matrices.
# --------------------------------------------------------------------------------------


def _wavelet_plane(codes, rows, bits: int):
    """Median of one `(H, W)` int32 plane of codes in [0, 2**bits), footprint `(D, 2)`."""
    R = (rows.shape[0] - 1) // 2
    H, W = codes.shape
    p = jnp.pad(codes, R, mode="edge")
    Hp, Wp = p.shape
    left, right, inside, k, _, _ = _footprint_stats(rows)

    # Per level (top bit first): zeros[level][row, i] = number of 0 bits among the first
    # i elements of that row's sequence at that level; the next level's sequence is the
    # stable partition (zeros first). Both passes are loops over the bits, not unrolled
    # (unrolled, the general path was a third of the median's compile time).
    positions = jnp.arange(Wp, dtype=jnp.int32)[None, :]
    row_ids = jnp.broadcast_to(jnp.arange(Hp)[:, None], (Hp, Wp))
    levels = jnp.arange(bits - 1, -1, -1, dtype=jnp.int32)  # the bit of each level

    def partition(seq, b):
        bit = (seq >> b) & 1
        z = jnp.cumsum(1 - bit, axis=1, dtype=jnp.int32)
        total = z[:, -1:]
        dest = jnp.where(bit == 0, z - 1, total + positions - z)
        seq = jnp.zeros_like(seq).at[row_ids, dest].set(seq, unique_indices=True)
        return seq, jnp.concatenate([jnp.zeros((Hp, 1), jnp.int32), z], axis=1)

    _, zeros = lax.scan(partition, p, levels)  # (bits, Hp, Wp + 1)

    dy = jnp.arange(-R, R + 1)
    row = jnp.arange(H)[None, :, None] + dy[:, None, None] + R  # (D, H, 1)
    x = jnp.arange(W)[None, None, :]
    lo = jnp.broadcast_to(x + R + jnp.where(inside, left, 0)[:, None, None], (2 * R + 1, H, W))
    hi = jnp.where(inside[:, None, None], x + R + right[:, None, None] + 1, lo)
    row_base = row * (Wp + 1)

    def descend(carry, level):
        rank, med, lo, hi = carry
        table, b = level
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
        return (rank, med, lo, hi), None

    start = (jnp.full((H, W), k, jnp.int32), jnp.zeros((H, W), jnp.int32), lo, hi)
    (_, med, _, _), _ = lax.scan(descend, start, (zeros, levels))
    return med


def _median_general(planes, rows):
    B, H, W = planes.shape
    bits = max(1, math.ceil(math.log2(H * W)))
    flat = planes.reshape(B, -1)
    ordered = jnp.sort(flat, axis=1)
    codes = jax.vmap(lambda s, v: jnp.searchsorted(s, v, side="left"))(ordered, flat)
    codes = codes.astype(jnp.int32).reshape(B, H, W)
    med = jax.vmap(functools.partial(_wavelet_plane, bits=bits))(codes, rows)
    return jnp.take_along_axis(ordered, med.reshape(B, -1), axis=1).reshape(B, H, W)


def _median_by_value(planes, rows):
    """Footprints beyond the networks: the 8-bit path where every plane's values are
    8-bit levels, else the general one. The 8-bit codes are computed once, for the
    test and for the 8-bit path."""
    codes, lut = _codes_and_lut(planes)
    return lax.cond(_is_8bit(planes, codes, lut), _median_8bit,
                    lambda p, r, *_: _median_general(p, r), planes, rows, codes, lut)


@jax.jit
def _median_planes(planes, rows):
    """Dispatches a flat batch of planes: the smallest network that holds every
    footprint (`_NETWORKS`), else by value kind (`_median_by_value`)."""
    fits = jnp.stack([_fits_network(rows, R) for R, _ in _NETWORKS])
    branches = [functools.partial(_network_planes, radius=R, size=S) for R, S in _NETWORKS]
    which = jnp.where(jnp.any(fits), jnp.argmax(fits), len(_NETWORKS))
    return lax.switch(which, branches + [_median_by_value], planes, rows)


@functools.cache
def _batched_median():
    """A `(B, H, W), (B, D, 2) -> (B, H, W)` median whose vmap folds into its batch axis."""

    @custom_vmap
    def median(planes, rows):
        return _median_planes(planes, rows)

    @median.def_vmap
    def _fold(axis_size, in_batched, planes, rows):
        planes_batched, rows_batched = in_batched
        if not planes_batched:
            planes = jnp.broadcast_to(planes, (axis_size,) + planes.shape)
        if not rows_batched:
            rows = jnp.broadcast_to(rows, (axis_size,) + rows.shape)
        out = median(planes.reshape((-1,) + planes.shape[2:]), rows.reshape((-1,) + rows.shape[2:]))
        return out.reshape(planes.shape), True

    return median


def median_blur(key, image, radius, *, max_radius: int = DEFAULT_MAX_RADIUS):
    """Median over a disk footprint, bit-exact to scikit-image for any float radius.

    Matches `skimage.filters.median(image[..., c], skimage.morphology.disk(radius),
    mode='nearest')` for every channel `c`, bit for bit, with `disk` evaluated as
    `disk_footprint` says: a concrete radius in its own precision (a Python float in
    float64, so `median_blur(k, x, 5.999999999999999)` is the study's 111-pixel disk),
    a traced radius in its dtype (float32 by default: exact to `disk(np.float32(r))`).
    To trace a radius that float32 cannot hold, trace its footprint instead:
    `median_blur(k, x, disk_footprint(r))` (what the sweep does).

    Args:
        key: unused (the kernel is deterministic); kept for the kernel signature.
        image: `(H, W, C)` float image in [0, 1].
        radius: disk radius in pixels, a float in `[0, max_radius + 0.5]`, or an int32
            `(2 * max_radius + 3, 2)` footprint from `disk_footprint`. Either may be
            traced: every radius shares one compiled program. A traced radius out of
            range, or one whose disk is empty (`0 < r < 0.59`: the grid misses the
            centre), gives an all-NaN image; a concrete one raises.
        max_radius: static largest whole radius; the cost grows with it.

    Returns:
        The filtered `(H, W, C)` image, same dtype as `image`.

    Raises:
        ValueError: a concrete radius out of range or with an empty disk, a footprint
            of the wrong shape, or a bad `max_radius`.
    """
    del key
    image = check_image(image, fn="median_blur")
    if int(max_radius) != max_radius or max_radius < 0:
        raise ValueError(f"median_blur: max_radius must be a non-negative int, got {max_radius}.")
    max_radius = int(max_radius)
    D = 2 * max_radius + 3
    if np.ndim(radius) == 2:
        if np.shape(radius) != (D, 2):
            raise ValueError(f"median_blur: a footprint level must have shape ({D}, 2) "
                             f"(disk_footprint(r, max_radius={max_radius})), got "
                             f"{np.shape(radius)}.")
        rows, ok = jnp.asarray(radius, jnp.int32), True
    elif is_traced(radius):
        radius, ok = check_level(radius, fn="median_blur", what="disk radius in pixels",
                                 low=0, high=max_radius + 0.5, dtype=radius.dtype)
        rows = disk_footprint(jnp.clip(radius, 0, max_radius + 0.5), max_radius)
    else:
        check_level(radius, fn="median_blur", what="disk radius in pixels", low=0,
                    high=max_radius + 0.5)
        rows, ok = disk_footprint(np.asarray(radius)[()], max_radius), True
    n = _footprint_stats(rows)[4]
    if not is_traced(n) and int(n) == 0:
        raise ValueError(f"median_blur: disk({radius}) is empty (radii between 0 and about "
                         "0.59 miss the grid's centre); use radius 0 or at least 0.6.")
    ok = ok & (n > 0)
    C = image.shape[-1]
    planes = jnp.moveaxis(image, -1, 0)
    out = _batched_median()(planes, jnp.broadcast_to(rows, (C,) + rows.shape))
    return finish(jnp.moveaxis(out, 0, -1), ok, image, clip=False)
