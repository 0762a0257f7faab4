"""Kernel benchmark: each corruption and SSIM, reference loop vs jaxrobust batched.

The references are what the corruption study ran, one image at a time:
`cv2.resize` for the scale-up, `skimage.filters.median` with a disk, skimage's
`random_noise` and `structural_similarity`. `skimage.filters.rank.median` and
`cv2.medianBlur` (a square window) are context rows: fast peers that are not exact
replacements. jaxrobust runs jit-compiled (compile timed apart) and vmapped over the
whole batch, with the level passed as a traced array, and the batch split over every
local device (on a CPU: one device per core, see `jaxrobust.sharding`).

Run: `python benchmarks/kernels.py` or `jaxrobust bench kernels`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import corruptions
from jaxrobust.bench.common import (
    bench_parser,
    device_info,
    parse,
    print_table,
    save,
    time_call,
)
from jaxrobust.metrics import ssim
from jaxrobust.sharding import shard_batch

_SOURCES = ("camera", "moon", "coins", "page", "text", "gravel", "grass", "brick")


def bench_images(n: int, size: int, *, seed: int = 0) -> np.ndarray:
    """`(n, size, size, 1)` 8-bit-valued float32 crops of scikit-image's bundled photos."""
    from skimage import data, transform

    rng = np.random.default_rng(seed)
    photos = [np.asarray(getattr(data, name)(), np.float64) for name in _SOURCES]
    photos = [p / 255.0 if p.max() > 1 else p for p in photos]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        short = min(photo.shape[:2])
        side = int(rng.integers(min(size, short), short + 1))
        y = int(rng.integers(0, photo.shape[0] - side + 1))
        x = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = transform.resize(photo[y:y + side, x:x + side], (size, size), anti_aliasing=True)
        out.append(np.round(crop * 255.0) / 255.0)
    return np.asarray(out, np.float32)[..., None]


def _ours(fn, images, level, keys, repeats):
    batched = shard_batch(jax.vmap(fn, in_axes=(0, 0, None)), in_axes=(0, 0, None))
    level = jnp.asarray(level, jnp.float32)
    start = time.perf_counter()
    out = jax.block_until_ready(batched(keys, images, level))
    compile_s = time.perf_counter() - start
    seconds = time_call(lambda: jax.block_until_ready(batched(keys, images, level)),
                        repeats=repeats)
    return np.asarray(out), compile_s, seconds


def _ref(fn, images, count):
    """Seconds per image of `fn(image2d)` over the first `count` images."""
    outs = []
    start = time.perf_counter()
    for image in images[:count]:
        outs.append(fn(image[..., 0]))
    return outs, (time.perf_counter() - start) / count


def run(n: int = 64, size: int = 174, radii=(1, 5, 10, 19), ref_images: int = 16,
        repeats: int = 3, log=print) -> dict:
    """Runs every row; returns the results payload."""
    import cv2
    from skimage.filters import median, rank
    from skimage.metrics import structural_similarity
    from skimage.morphology import disk
    from skimage.util import random_noise

    images = bench_images(n, size)
    u8 = np.round(images[..., 0] * 255).astype(np.uint8)
    keys = jax.random.split(jax.random.key(0), n)
    rows = []

    def add(kernel, level, reference, ref_s, ours_s, compile_s, exact=None, note=""):
        row = {"kernel": kernel, "level": level, "reference": reference,
               "ref_images_per_s": None if ref_s is None else 1.0 / ref_s,
               "jaxrobust_images_per_s": None if ours_s is None else n / ours_s,
               "compile_s": compile_s, "exact": exact, "note": note}
        if ref_s is not None and ours_s is not None:
            row["speedup"] = row["jaxrobust_images_per_s"] / row["ref_images_per_s"]
        else:
            row["speedup"] = None
        rows.append(row)
        log(f"  {kernel:15s} level {level:<6g} {reference:32s} "
            f"ref {row['ref_images_per_s'] or 0:9.1f} img/s  "
            f"ours {row['jaxrobust_images_per_s'] or 0:9.1f} img/s  "
            f"x{row['speedup'] or 0:.1f}")

    # scale_up: an integer crop so that cv2 computes the same thing
    crop = 11
    out, comp, ours = _ours(corruptions.scale_up, images, crop, keys, repeats)
    refs, ref_s = _ref(lambda im: cv2.resize(im[crop:-crop, crop:-crop], (size, size),
                                             interpolation=cv2.INTER_LINEAR), images, n)
    err = float(np.max(np.abs(out[..., 0] - np.asarray(refs))))
    add("scale_up", crop, "cv2.resize INTER_LINEAR", ref_s, ours, comp, exact=err < 1e-4,
        note=f"max abs diff {err:.2g}")

    for r in radii:
        out, comp, ours = _ours(corruptions.median_blur, images, r, keys, repeats)
        count = min(n, ref_images)
        refs, ref_s = _ref(lambda im, r=r: median(im, disk(r), mode="nearest"), images, count)
        exact = bool(np.array_equal(out[:count, ..., 0], np.asarray(refs)))
        add("median_blur", r, "skimage.filters.median", ref_s, ours, comp, exact=exact,
            note=f"reference timed on {count} images")
        _, rank_s = _ref(lambda im, r=r: rank.median(im, disk(r)), u8[..., None], n)
        add("median_blur", r, "context: skimage rank.median (u8)", rank_s, ours, None,
            note="other border rule")
        _, cv_s = _ref(lambda im, r=r: cv2.medianBlur(im, 2 * r + 1), u8[..., None], n)
        add("median_blur", r, "context: cv2.medianBlur (u8)", cv_s, ours, None,
            note="square window, not a disk")

    sigma = 0.05
    out, comp, ours = _ours(corruptions.gaussian_noise, images, sigma, keys, repeats)
    refs, ref_s = _ref(lambda im: random_noise(im, mode="gaussian", var=sigma**2, clip=True),
                       images, n)
    add("gaussian_noise", sigma, "skimage.util.random_noise", ref_s, ours, comp,
        note="same distribution, different generator")

    noisy = out
    batched = shard_batch(jax.vmap(ssim), in_axes=(0, 0))
    start = time.perf_counter()
    scores = np.asarray(jax.block_until_ready(batched(images, noisy)))
    comp = time.perf_counter() - start
    ours = time_call(lambda: jax.block_until_ready(batched(images, noisy)), repeats=repeats)
    start = time.perf_counter()
    ref_scores = [structural_similarity(a, b, data_range=1.0, channel_axis=-1)
                  for a, b in zip(images, noisy, strict=True)]
    ref_s = (time.perf_counter() - start) / n
    err = float(np.max(np.abs(scores - np.asarray(ref_scores))))
    add("ssim", 7, "skimage structural_similarity", ref_s, ours, comp, exact=err < 1e-5,
        note=f"max abs diff {err:.2g}")

    info = device_info()
    return {"benchmark": "kernels", "device": info, "images": n,
            "shape": [size, size, 1], "dtype": "float32, 8-bit-valued",
            "batch": n, "repeats": repeats, "rows": rows,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=174)
    parser.add_argument("--radii", type=int, nargs="+", default=[1, 5, 10, 19])
    parser.add_argument("--ref-images", type=int, default=16,
                        help="images the slow skimage median is timed on (default 16)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parse(parser, argv)
    payload = run(args.images, args.size, tuple(args.radii), args.ref_images, args.repeats)
    out = save(payload, "kernels", args.out)
    print()
    print_table(payload["rows"], [
        ("kernel", "kernel", "{}"), ("level", "level", "{:g}"), ("reference", "reference", "{}"),
        ("ref_images_per_s", "ref img/s", "{:.1f}"),
        ("jaxrobust_images_per_s", "jaxrobust img/s", "{:.1f}"),
        ("speedup", "ratio", "{:.1f}x"), ("exact", "exact", "{}"),
    ])
    print(f"\nwrote {out}")
    return payload


if __name__ == "__main__":
    main()
