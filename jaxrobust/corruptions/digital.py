"""Digital and photometric kernels: brightness, contrast, saturate, gamma, pixelate,
JPEG compression, elastic transform.

All but `saturate` take their physical parameter as the level (a brightness offset, a
contrast factor, a JPEG quality...); `saturate`'s parameters come in pairs, so it
takes ImageNet-C's severity, continuous in `[0, 5]`, as does `elastic_transform` with
a small-image benchmark's table (its three parameters per severity).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap

from jaxrobust import _fusion, _prng
from jaxrobust.corruptions import _ops, tables


def brightness(key, image, delta):
    """ImageNet-C's `brightness`: `delta` added to the HSV value (to the intensity of a
    grayscale image), clipped. Severities 1-5: delta 0.1 .. 0.5.

    Args:
        key: unused (deterministic).
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        delta: `-1 <= delta <= 1`; may be traced.
    """
    del key
    image, x, delta, ok = _ops.start(image, delta, "brightness",
                                    what="value offset", low=-1.0, high=1.0)
    if x.shape[-1] == 1:
        return _ops.finish(x + delta, ok, image)
    hsv = _ops.rgb_to_hsv(x)
    hsv = hsv.at[..., 2].set(jnp.clip(hsv[..., 2] + delta, 0.0, 1.0))
    return _ops.finish(_ops.hsv_to_rgb(hsv), ok, image)


def contrast(key, image, factor):
    """ImageNet-C's `contrast`: `(x - mean) * factor + mean` per channel, clipped.

    `factor < 1` lowers contrast (ImageNet-C severities 1-5: 0.4, 0.3, 0.2, 0.1, 0.05),
    `factor > 1` raises it (MedMNIST-C's `contrast_up`).

    Args:
        key: unused (deterministic).
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        factor: `0 <= factor <= 10`; 1 leaves the image unchanged; may be traced.
    """
    del key
    image, x, factor, ok = _ops.start(image, factor, "contrast",
                                    what="contrast factor", low=0.0, high=10.0)
    means = jnp.mean(x, axis=(0, 1), keepdims=True)
    return _ops.finish((x - means) * factor + means, ok, image)


def gamma(key, image, exponent):
    """Gamma correction `x ** exponent` (MedMNIST-C's `gamma_corr` for X-ray and CT:
    up 1.1, 1.2, 1.3, 1.4, 1.6; down 0.9 .. 0.4). Equals
    `skimage.exposure.adjust_gamma(x, exponent)` for floats.

    Args:
        key: unused (deterministic).
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        exponent: `0.05 <= exponent <= 20`; 1 leaves the image unchanged; may be traced.
    """
    del key
    image, x, exponent, ok = _ops.start(image, exponent, "gamma",
                                    what="gamma exponent", low=0.05, high=20.0)
    return _ops.finish(x ** exponent, ok, image)


def saturate(key, image, severity, *, table: str = tables.DEFAULT):
    """ImageNet-C's `saturate`: HSV saturation `s * factor + offset`, clipped.

    Severities 1-5: `tables.ROWS["saturate"][table]`, (factor, offset) (the first two
    desaturate, the last three saturate);
    fractional severities interpolate, below 1 the output fades from the clean image.
    A grayscale image has no saturation and is returned unchanged, as the reference
    does (it converts gray to RGB, and hue 0 maps the value back to red).

    Args:
        key: unused (deterministic).
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        severity: `0 <= severity <= 5`, may be fractional and traced.
        table: the benchmark's parameters (static).
    """
    del key
    image, x, severity, ok = _ops.start(image, severity, "saturate")
    rows = tables.rows("saturate", table)
    if x.shape[-1] == 1:
        return _ops.finish(x, ok, image)
    factor, offset = _ops.table_params(rows, jnp.maximum(severity, 1.0) - 1.0)
    hsv = _ops.rgb_to_hsv(x)
    hsv = hsv.at[..., 1].set(jnp.clip(hsv[..., 1] * factor + offset, 0.0, 1.0))
    out = _ops.hsv_to_rgb(hsv)
    return _ops.finish(_ops.blend_below_one(x, out, severity), ok, image)


@functools.lru_cache(maxsize=32)
def _pillow_pixelate_plan(n: int, up: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's pixelate round trip along one `n`-pixel axis, for every small size.

    Row `s` (1 <= s <= n; row 0 repeats row 1) holds, for each of the `n` output
    pixels, the source window `[lo, hi)` that Pillow's BOX filter averages into the
    small pixel that `up` (`"nearest"` or `"box"`) copies back to it: `(lo, hi)`, each
    `(n + 1, n)` int32. Read off Pillow itself (identity images in mode "F", one
    resize per small size and direction), so ties land where its double-precision
    coordinates put them; its BOX upsampling copies one pixel, as NEAREST does.
    Once per process and side, when a kernel is traced: ~0.1 s at 224 pixels, ~1.3 s
    at 512 (the probes grow as `n**3`).
    """
    from PIL import Image

    resample = Image.NEAREST if up == "nearest" else Image.BOX
    eye = Image.fromarray(np.eye(n, dtype=np.float32), "F")
    lo = np.zeros((n + 1, n), np.int32)
    hi = np.ones((n + 1, n), np.int32)
    for s in range(1, n + 1):
        window = np.asarray(eye.resize((s, n), Image.BOX)) > 0  # (source, small pixel)
        first, last = window.argmax(0), n - window[::-1].argmax(0)
        back = np.asarray(Image.fromarray(np.eye(s, dtype=np.float32), "F").resize(
            (n, s), resample))  # (small pixel, output pixel), one-hot columns
        src = back.argmax(0)
        lo[s], hi[s] = first[src], last[src]
    lo[0], hi[0] = lo[1], hi[1]
    return lo, hi


#: Window reaches (pixels from an output pixel to the far end of its window) that
#: `_box_round_trip` sums in one fused pass: 1 holds factors down to 0.5 (CIFAR-10-C's
#: and Tiny-ImageNet-C's severities), 3 ImageNet-C's down to 0.25 at 224 or 64 pixels,
#: 6 factors down to ~1/6; beyond, a loop adds the rest.
_PIXELATE_BANDS = (1, 3, 6)


def _box_round_trip(padded, lo, hi, axis: int, unit: int, band: int, wide: bool):
    """One axis of Pillow's 8-bit pixelate on a 2-D uint8 array, edge-padded with
    zeros by `_PIXELATE_BANDS[-1]` pixels on both sides of `axis`: along `axis`, whose
    `n * unit` entries are `n` pixels of `unit` interleaved values (`unit` = the
    channels for the horizontal pass on an `(H, W * C)` image), output pixel `j` becomes
    Pillow's BOX mean of source pixels `[lo_j, hi_j)`: `(sum * k + 2**21) >> 22` with
    `k = round(2**22 / count)`, the 22-bit fixed point of its 8-bit resampler. Exact
    integers, stored as uint8, unpadded.

    The sum is one fused pass over the shifted copies of the image at offsets `-band ..
    band`, each masked by whether the offset falls in `j`'s window (masks computed
    apart, one per offset): dense, vectorised along the image's contiguous axis (int16
    sums), with no gather (a gather along the channel-interleaved axis, once vmapped,
    came out transposed). With `wide` a loop adds the offsets beyond the band.
    """
    P = _PIXELATE_BANDS[-1]
    N = padded.shape[axis] - 2 * P * unit
    j = jnp.arange(N // unit, dtype=jnp.int32)
    offsets = range(-band, band + 1)

    first, last = jnp.repeat(lo - j, unit), jnp.repeat(hi - j, unit)  # window, relative

    def weights(first, last):
        """Per entry along `axis`: whether each offset lies in its pixel's window, and
        the pixel's fixed-point weight `k = int(0.5 + 2**22 / count)` (as Pillow rounds)."""
        count = last - first
        return [(first <= e) & (e < last) for e in offsets], (2 ** 23 + count) // (2 * count)

    # computed apart: fused into the pass, XLA recomputed them (an integer division
    # among them) for every value of the image
    inside, k = _fusion.separately(weights, first, last)

    def along(v):  # (N,) -> broadcastable against the image along `axis`
        return v[:, None] if axis == 0 else v[None, :]

    def shifted(e):
        return lax.slice_in_dim(padded, (P + e) * unit, (P + e) * unit + N, axis=axis)

    total = functools.reduce(
        lambda t, i: t + jnp.where(along(inside[i]), shifted(offsets[i]).astype(jnp.int16), 0),
        range(len(offsets)), jnp.zeros(shifted(0).shape, jnp.int16))
    if wide:
        a = shifted(0)

        def beyond(e, total):  # offsets +-e beyond the band
            pos = jnp.arange(N)
            for sign in (1, -1):
                src = jnp.clip(pos + sign * e * unit, 0, N - 1)
                ok = (first <= sign * e) & (sign * e < last)
                total = total + jnp.where(along(ok), jnp.take(a, src, axis=axis), 0)
            return total

        reach = jnp.maximum(jnp.max(-first), jnp.max(last - 1))
        total = lax.fori_loop(band + 1, reach + 1, beyond, total.astype(jnp.int32))
    out = (total.astype(jnp.int32) * along(k) + 2 ** 21) >> 22
    return out.astype(jnp.uint8)


def _pixelate_codes(codes, small_w, small_h, ok, *, channels: int, up: str, dtype):
    """Pillow's pixelate of `(B, H + 2 P, (W + 2 P) * C)` uint8 images (8-bit codes,
    zero-padded by `P = _PIXELATE_BANDS[-1]` pixels on every side), each at `R` small
    sizes `(B, R)` (width, height) -> `(B, R, H, W * C)` `dtype` images in [0, 1], NaN
    where `ok` `(B, R)` is False. How far the windows reach is decided once for the
    whole batch (`lax.switch`): the narrowest band that holds them all, or the widest
    plus a loop."""
    P = _PIXELATE_BANDS[-1]
    H, W = codes.shape[1] - 2 * P, codes.shape[2] // channels - 2 * P
    (lo_w, hi_w), (lo_h, hi_h) = (
        (jnp.asarray(lo)[s], jnp.asarray(hi)[s])
        for (lo, hi), s in ((_pillow_pixelate_plan(W, up), small_w),
                            (_pillow_pixelate_plan(H, up), small_h)))

    def reach(lo, hi):  # how far any window reaches from its output pixel
        j = lax.broadcasted_iota(lo.dtype, lo.shape, lo.ndim - 1)
        return jnp.maximum(jnp.max(j - lo), jnp.max(hi - 1 - j))

    def run(band, wide):
        def one(a, lw, hw, lh, hh, ok):
            # Pillow goes horizontally first (on every row, the zero rows of the
            # padding included: they stay zero), each pass rounded to 8 bits; kept
            # apart so that XLA does not recompute the first pass for every offset of
            # the second
            rows = _fusion.separately(lambda a: _box_round_trip(
                a, lw, hw, axis=1, unit=channels, band=band, wide=wide), a)
            out = _box_round_trip(rows, lh, hh, axis=0, unit=1, band=band, wide=wide)
            return jnp.where(ok, out.astype(jnp.float32) / 255.0, jnp.nan).astype(dtype)

        # every image's codes are shared by its R sizes (in_axes None: not copied)
        each = jax.vmap(jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0)))
        return lambda: each(codes, lo_w, hi_w, lo_h, hi_h, ok)

    far = jnp.maximum(reach(lo_w, hi_w), reach(lo_h, hi_h))
    bands = _PIXELATE_BANDS
    which = jnp.searchsorted(jnp.asarray(bands), far)  # len(bands): beyond every band
    return lax.switch(which, [run(b, False) for b in bands] + [run(bands[-1], True)])


@functools.cache
def _pixelate_batched(channels: int, up: str, dtype):
    """`_pixelate_codes`, whose vmap folds into its batch axes: one `switch` per call,
    however the images and sizes are vmapped, and an image vmapped against a batch of
    sizes alone is not copied per size."""

    @custom_vmap
    def pix(codes, small_w, small_h, ok):
        return _pixelate_codes(codes, small_w, small_h, ok, channels=channels, up=up,
                               dtype=dtype)

    @pix.def_vmap
    def _fold(axis_size, in_batched, codes, *sizes):
        B, R = sizes[0].shape[-2:]
        if in_batched[0]:  # (A, B, ...) images: fold A into the images
            sizes = [s if b else jnp.broadcast_to(s, (axis_size, B, R))
                     for s, b in zip(sizes, in_batched[1:], strict=True)]
            out = pix(codes.reshape((-1,) + codes.shape[2:]),
                      *(s.reshape(-1, R) for s in sizes))
            return out.reshape((axis_size, B) + out.shape[1:]), True
        # shared images: fold A into the sizes, (A, B, R) -> (B, A * R)
        sizes = [jnp.moveaxis(s, 0, 1).reshape(B, -1) if b else jnp.tile(s, (1, axis_size))
                 for s, b in zip(sizes, in_batched[1:], strict=True)]
        out = pix(codes, *sizes)  # (B, A * R, H, W * C)
        out = out.reshape((B, axis_size, R) + out.shape[2:])
        return jnp.moveaxis(out, 1, 0), True

    return jax.jit(pix)  # eager calls: compiled once per shape, not at every call


def pixelate(key, image, factor, *, table: str = tables.DEFAULT):
    """ImageNet-C's `pixelate`: Pillow's BOX resize to `factor` of the size, then
    back to the full size: NEAREST with the `imagenet` table (`imagecorruptions`),
    BOX with the small-image benchmarks' (their generators). Severities 1-5:
    `tables.LEVELS["pixelate"][table]` (ImageNet-C: 0.6, 0.5, 0.4, 0.3, 0.25).

    Computed as Pillow computes an 8-bit image: the image is rounded to 8 bits (the
    reference's uint8), resampled horizontally then vertically with 22-bit fixed-point
    box weights, each pass rounded to 8 bits; the windows are Pillow's own for every
    small size (`_pillow_pixelate_plan`). Equals Pillow value for value.

    Args:
        key: unused (deterministic).
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        factor: `0 < factor <= 1` (the small image is `int(H * factor)` by
            `int(W * factor)`, at least 1 pixel); may be traced.
        table: the benchmark (static): which resampling goes back up.
    """
    tables.check(table)
    del key
    image, x, factor, ok = _ops.start(image, factor, "pixelate",
                                    what="size factor", low=1e-6, high=1.0)
    H, W, _ = x.shape
    up = "nearest" if table == "imagenet" else "box"

    def small(n):
        return jnp.clip(jnp.floor(n * factor + 1e-4), 1, n).astype(jnp.int32)

    C = x.shape[-1]
    P = _PIXELATE_BANDS[-1]
    # 8-bit codes on the flat (H, W * C) view, zero-padded by P pixels on every side
    codes = jnp.round(jnp.clip(x.reshape(H, W * C), 0.0, 1.0) * 255.0).astype(jnp.uint8)
    codes = jnp.pad(codes, ((P, P), (P * C, P * C)))
    out = _pixelate_batched(C, up, image.dtype)(
        codes[None], small(W)[None, None], small(H)[None, None], jnp.asarray(ok)[None, None])
    return out.reshape(H, W, C)


# JPEG (ITU T.81 Annex K tables, libjpeg's quality scaling, JFIF colour, 4:2:0).
_LUMA_Q = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], np.float32).reshape(8, 8)
_CHROMA_Q = np.full((8, 8), 99.0, np.float32)
_CHROMA_Q[:4, :4] = np.array([17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 99, 47, 66, 99, 99],
                             np.float32).reshape(4, 4)


def _quant_table(base, quality):
    """libjpeg's `jpeg_set_quality` (baseline): scaled table, clamped to 1..255."""
    scale = jnp.where(quality < 50, jnp.floor(5000.0 / quality), 200.0 - 2.0 * quality)
    return jnp.clip(jnp.floor((base * scale + 50.0) / 100.0), 1.0, 255.0)


# libjpeg's ISLOW integer DCT (jfdctint.c / jidctint.c): 13-bit constants, 2 extra
# bits of precision between the passes.
_CONST_BITS, _PASS1_BITS = 13, 2
_F0298, _F0390, _F0541, _F0765 = 2446, 3196, 4433, 6270
_F0899, _F1175, _F1501, _F1847 = 7373, 9633, 12299, 15137
_F1961, _F2053, _F2562, _F3072 = 16069, 16819, 20995, 25172


def _descale(x, n: int):
    return jnp.right_shift(x + (1 << (n - 1)), n)


def _odd_products(a, b, c, d):
    """The odd part shared by the forward and inverse ISLOW DCT: inputs `(a, b, c, d)`
    are the forward's (tmp4, tmp5, tmp6, tmp7) or the inverse's (in7, in5, in3, in1)."""
    z1, z2, z3, z4 = a + d, b + c, a + c, b + d
    z5 = (z3 + z4) * _F1175
    z1, z2 = z1 * -_F0899, z2 * -_F2562
    z3, z4 = z3 * -_F1961 + z5, z4 * -_F0390 + z5
    return a * _F0298 + z1 + z3, b * _F2053 + z2 + z4, c * _F3072 + z2 + z3, d * _F1501 + z1 + z4


def _fdct_1d(d, first: bool):
    """One pass of `jpeg_fdct_islow` over 8 int32 arrays (the samples along an axis)."""
    t0, t7, t1, t6 = d[0] + d[7], d[0] - d[7], d[1] + d[6], d[1] - d[6]
    t2, t5, t3, t4 = d[2] + d[5], d[2] - d[5], d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    shift = _CONST_BITS - _PASS1_BITS if first else _CONST_BITS + _PASS1_BITS
    if first:
        out0, out4 = jnp.left_shift(t10 + t11, _PASS1_BITS), jnp.left_shift(t10 - t11, _PASS1_BITS)
    else:
        out0, out4 = _descale(t10 + t11, _PASS1_BITS), _descale(t10 - t11, _PASS1_BITS)
    z1 = (t12 + t13) * _F0541
    out2, out6 = _descale(z1 + t13 * _F0765, shift), _descale(z1 + t12 * -_F1847, shift)
    o7, o5, o3, o1 = _odd_products(t4, t5, t6, t7)
    return [out0, _descale(o1, shift), out2, _descale(o3, shift), out4, _descale(o5, shift),
            out6, _descale(o7, shift)]


def _idct_1d(d, shift: int):
    """One pass of `jpeg_idct_islow` over 8 int32 arrays, descaled by `shift` bits."""
    z1 = (d[2] + d[6]) * _F0541
    t2, t3 = z1 + d[6] * -_F1847, z1 + d[2] * _F0765
    t0, t1 = jnp.left_shift(d[0] + d[4], _CONST_BITS), jnp.left_shift(d[0] - d[4], _CONST_BITS)
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_products(d[7], d[5], d[3], d[1])
    return [_descale(t10 + o3, shift), _descale(t11 + o2, shift), _descale(t12 + o1, shift),
            _descale(t13 + o0, shift), _descale(t13 - o0, shift), _descale(t12 - o1, shift),
            _descale(t11 - o2, shift), _descale(t10 - o3, shift)]


def _along(fn, x, axis: int):
    """`fn` on the 8 slices of `x` along `axis`, restacked there."""
    parts = fn([jnp.take(x, k, axis=axis) for k in range(8)])
    return jnp.stack(parts, axis=axis)


def _jpeg_plane(plane, table):
    """One `(h, w)` plane (multiples of 8, int32 samples 0..255) through libjpeg's
    baseline codec: ISLOW forward DCT, quantisation by `table` (rounded division, as
    `jcdctmgr.c`), dequantisation, ISLOW inverse DCT, +128 and clamped: int32."""
    h, w = plane.shape
    # [y, x, block row, block column]: each of the 64 frequencies a contiguous plane,
    # so that the butterflies run over whole planes
    # the transposes to and from block order compiled apart (`separately`): fused into
    # the butterflies they became strided reads element by element (~18 % of the codec)
    blocks = _fusion.separately(
        lambda p: (p - 128).reshape(h // 8, 8, w // 8, 8).transpose(1, 3, 0, 2), plane)
    coef = _along(lambda d: _fdct_1d(d, True), blocks, 1)  # rows
    coef = _along(lambda d: _fdct_1d(d, False), coef, 0)  # columns; scaled up by 8
    q = (table * 8)[:, :, None, None]
    # jcdctmgr.c's rounded division of |coef| by q. x86 has no vector integer
    # division, and `//` ran per element (~40 % of the codec): the quotient is taken
    # in float32 (within 1 of the true one: XLA may divide by a refined reciprocal)
    # and corrected by its remainder, which is exact
    num = jnp.abs(coef) + q // 2
    magnitude = (num.astype(jnp.float32) / q.astype(jnp.float32)).astype(jnp.int32)
    rest = num - magnitude * q
    magnitude = magnitude + (rest >= q).astype(jnp.int32) - (rest < 0).astype(jnp.int32)
    quantised = jnp.where(coef < 0, -magnitude, magnitude)
    dequant = quantised * table[:, :, None, None]
    ws = _along(lambda d: _idct_1d(d, _CONST_BITS - _PASS1_BITS), dequant, 0)  # columns
    out = _along(lambda d: _idct_1d(d, _CONST_BITS + _PASS1_BITS + 3), ws, 1)  # rows
    out = _fusion.separately(lambda o: jnp.clip(o + 128, 0, 255), out)
    return _fusion.separately(lambda o: o.transpose(2, 0, 3, 1).reshape(h, w), out)


def _fancy_upsample(c):
    """libjpeg's h2v2 'fancy' (triangle) chroma upsampling, `(h, w)` -> `(2h, 2w)` int32,
    the edge rows and columns repeated as `jdsample.c` does."""
    up = jnp.concatenate([c[:1], c[:-1]], axis=0)
    down = jnp.concatenate([c[1:], c[-1:]], axis=0)
    rows = jnp.stack([3 * c + up, 3 * c + down], axis=1).reshape(-1, c.shape[1])
    left = jnp.concatenate([rows[:, :1], rows[:, :-1]], axis=1)
    right = jnp.concatenate([rows[:, 1:], rows[:, -1:]], axis=1)
    cols = jnp.stack([jnp.right_shift(3 * rows + left + 8, 4),
                      jnp.right_shift(3 * rows + right + 7, 4)], axis=2)
    return cols.reshape(rows.shape[0], -1)


# libjpeg's fixed-point colour conversion (jccolor.c, jdcolor.c): 16 fraction bits
_ONE_HALF = 1 << 15
_FIX = {k: int(v * 65536 + 0.5) for k, v in {
    "0.29900": 0.299, "0.58700": 0.587, "0.11400": 0.114, "0.16874": 0.16874,
    "0.33126": 0.33126, "0.41869": 0.41869, "0.08131": 0.08131, "1.40200": 1.402,
    "1.77200": 1.772, "0.71414": 0.71414, "0.34414": 0.34414}.items()}


def jpeg_compression(key, image, quality):
    """ImageNet-C's `jpeg_compression`: a baseline JPEG round trip at `quality`, as
    Pillow saves and reads it with libjpeg(-turbo)'s defaults: quality-scaled Annex K
    tables, fixed-point JFIF YCbCr, 4:2:0 chroma (2x2 sums with libjpeg's alternating
    rounding bias), edges replicated to whole blocks, the ISLOW integer DCT and
    inverse DCT, fancy (triangle) chroma upsampling, fixed-point RGB. Integer
    arithmetic throughout, as libjpeg's, so the result is Pillow's pixel for pixel
    (tested). Grayscale images are coded as their luma plane alone (what a gray ->
    RGB -> JPEG -> gray round trip amounts to: gray RGB has chroma 128 exactly).
    Severities 1-5: quality 25, 18, 15, 10, 7 (ImageNet-C; `tables.LEVELS` has the
    other benchmarks').

    Args:
        key: unused (deterministic).
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        quality: `1 <= quality <= 100`; may be traced (the tables are computed).
    """
    del key
    image, x, quality, ok = _ops.start(image, quality, "jpeg_compression",
                                    what="JPEG quality", low=1.0, high=100.0)
    H, W, C = x.shape
    block = 8 if C == 1 else 16
    ph, pw = -H % block, -W % block
    samples = jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.int32)
    rgb = jnp.pad(samples, ((0, ph), (0, pw), (0, 0)), mode="edge")
    luma_q = _quant_table(jnp.asarray(_LUMA_Q), quality).astype(jnp.int32)
    if C == 1:
        out = _jpeg_plane(rgb[..., 0], luma_q)[..., None]
        return _ops.finish(out[:H, :W].astype(jnp.float32) / 255.0, ok, image)
    chroma_q = _quant_table(jnp.asarray(_CHROMA_Q), quality).astype(jnp.int32)
    f = _FIX
    ch, cw = -(-H // 2), -(-W // 2)  # the chroma planes' real size

    def chroma(c):
        hh, ww = c.shape
        sums = c.reshape(hh // 2, 2, ww // 2, 2).sum(axis=(1, 3))
        bias = 1 + (jnp.arange(ww // 2) % 2)  # jcsample.c: 1, 2, 1, 2, ...
        small = jnp.right_shift(sums + bias[None, :], 2)
        # upsampled apart: fused into the colour conversion, the interleaving ran in
        # that loop for every output value (~20 % of the codec; docs/architecture.md)
        return _fusion.separately(_fancy_upsample, _jpeg_plane(small, chroma_q)[:ch, :cw])

    def codec(rgb):
        # On planes: XLA's CPU loops vectorise along an output's minor axis, which for
        # (H, W, 3) would be the 3 channels (measured ~3x slower as one fusion).
        r, g, b = jnp.moveaxis(rgb, -1, 0)
        y = jnp.right_shift(f["0.29900"] * r + f["0.58700"] * g + f["0.11400"] * b
                            + _ONE_HALF, 16)
        offset = (128 << 16) + _ONE_HALF - 1
        cb = jnp.right_shift(-f["0.16874"] * r - f["0.33126"] * g + 32768 * b + offset, 16)
        cr = jnp.right_shift(32768 * r - f["0.41869"] * g - f["0.08131"] * b + offset, 16)
        y = _jpeg_plane(y, luma_q)[:H, :W]
        cb = chroma(cb)[:H, :W] - 128
        cr = chroma(cr)[:H, :W] - 128
        red = y + jnp.right_shift(f["1.40200"] * cr + _ONE_HALF, 16)
        green = y + jnp.right_shift(-f["0.34414"] * cb + _ONE_HALF - f["0.71414"] * cr, 16)
        blue = y + jnp.right_shift(f["1.77200"] * cb + _ONE_HALF, 16)
        return jnp.clip(jnp.stack([red, green, blue]), 0, 255)

    out = jnp.moveaxis(_fusion.separately(codec, rgb), 0, -1)
    return _ops.finish(out.astype(jnp.float32) / 255.0, ok, image)


def _affine_points(h: int, w: int) -> np.ndarray:
    """The generators' three anchor points `(x, y)` for `cv2.getAffineTransform`: the
    centre `(h // 2, w // 2)` plus and minus `min(h, w) // 3` (as they wrote it, the
    first coordinate from the height; square images make no difference)."""
    centre = np.float32([h, w]) // 2
    side = min(h, w) // 3
    return np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])


def _elastic_small(key, x, severity, rows):
    """The small-image generators' elastic transform at a (traced) severity: a random
    affine warp (BORDER_REFLECT_101), then a smoothed random displacement field."""
    H, W, _ = x.shape
    side = float(min(H, W))
    alpha, sigma, shift = (p * side for p in _ops.table_params(
        rows, jnp.maximum(severity, 1.0) - 1.0))
    k_affine, k_field = jax.random.split(key)
    src = jnp.asarray(_affine_points(H, W))
    dst = src + shift * jax.random.uniform(k_affine, (3, 2), jnp.float32, -1.0, 1.0)
    # cv2.getAffineTransform(src, dst): dst = M [src; 1]; warpAffine samples the image
    # at M^-1 (x, y) for every output pixel (x: column, y: row)
    a = jnp.concatenate([src, jnp.ones((3, 1), jnp.float32)], axis=1)
    m = jnp.linalg.solve(a, dst).T  # (2, 3)
    lin_inv = jnp.linalg.inv(m[:, :2])
    rows_, cols = jnp.meshgrid(jnp.arange(H, dtype=jnp.float32),
                               jnp.arange(W, dtype=jnp.float32), indexing="ij")
    out_xy = jnp.stack([cols - m[0, 2], rows_ - m[1, 2]])  # (2, H, W)
    src_x, src_y = jnp.einsum("ij,jhw->ihw", lin_inv, out_xy,
                              precision=lax.Precision.HIGHEST)
    warped = _ops.bilinear_sample(x, src_y, src_x, "mirror")
    max_sigma = max(r[1] for r in rows) * side
    noise = _prng.uniform(k_field, (H, W, 2), jnp.float32, -1.0, 1.0)
    field = _ops.gaussian_blur_image(noise, sigma, max_sigma, mode="reflect",
                                     truncate=3.0) * alpha
    return _ops.bilinear_sample(warped, rows_ + field[..., 1], cols + field[..., 0],
                                "reflect")


def elastic_transform(key, image, level, *, table: str = tables.DEFAULT):
    """ImageNet-C's `elastic_transform`, in the benchmark `table`'s formula.

    `imagenet` (as in `imagecorruptions`; the level is the gain `alpha`): a smooth
    random displacement field, bilinear resampling with reflected borders. Each
    displacement component is uniform in `[-0.005 H, 0.005 H]` per pixel, blurred by a
    Gaussian of sigma `0.01 (H, W)` (reflect, truncate 3) and multiplied by `alpha`;
    the image is sampled at `(y + dy, x + dx)` like `scipy.ndimage.map_coordinates(
    order=1, mode='reflect')`. Severities 1-5: alpha 12.5, 16.25, 21.25, 25, 30.

    `cifar10`, `tinyimagenet`, `imagenet64` (the level is the severity, continuous in
    [0, 5]; `tables.ROWS["elastic_transform"][table]` holds (alpha, sigma, shift) as
    fractions of the image side `S = min(H, W)`): first a random affine warp, the
    three points `_affine_points` each moved by `U(-shift S, shift S)` per coordinate
    (`cv2.getAffineTransform` + `cv2.warpAffine`, bilinear, BORDER_REFLECT_101); then
    displacements `U(-1, 1)` per pixel blurred by sigma `sigma S` (reflect, truncate 3)
    times `alpha S`, sampled as above. (OpenCV's warp rounds its coordinates to 1/32
    pixel; here they are exact.)

    Args:
        key: a `jax.random` key.
        image: `(H, W, C)` float image in [0, 1], C in {1, 3}.
        level: `imagenet`: `0 <= alpha <= 100`; the others: `0 <= severity <= 5`. May
            be traced.
        table: the benchmark (static).
    """
    if tables.check(table) != "imagenet":
        image, x, severity, ok = _ops.start(image, level, "elastic_transform")
        out = _elastic_small(key, x, severity, tables.rows("elastic_transform", table))
        return _ops.finish(_ops.blend_below_one(x, out, severity), ok, image)
    alpha = level
    image, x, alpha, ok = _ops.start(image, alpha, "elastic_transform",
                                    what="displacement gain", low=0.0, high=100.0)
    H, W = x.shape[:2]
    sigma = (0.01 * H, 0.01 * W)
    max_d = 0.005 * H
    noise = _prng.uniform(key, (H, W, 2), jnp.float32, -max_d, max_d)
    field = _ops.gaussian_blur_image(noise, sigma, max(sigma), mode="reflect",
                                     truncate=3.0) * alpha
    ys = jnp.arange(H, dtype=jnp.float32)[:, None] + field[..., 1]
    xs = jnp.arange(W, dtype=jnp.float32)[None, :] + field[..., 0]
    return _ops.finish(_ops.bilinear_sample(x, ys, xs, "reflect"), ok, image)
