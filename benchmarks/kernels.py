"""Kernel benchmark: each corruption and SSIM, reference loop vs jaxrobust batched.

Part two (`run_suite`): ImageNet-C's 15 corruptions at severities 1-5 on 224 x 224
RGB images, `imagecorruptions` against jaxrobust.

The references are what the corruption study ran, one image at a time:
`cv2.resize` for the scale-up, `skimage.filters.median` with a disk, skimage's
`random_noise` and `structural_similarity`. `skimage.filters.rank.median` and
`cv2.medianBlur` (a square window) are context rows: fast peers that are not exact
replacements. jaxrobust runs jit-compiled (compile timed apart) and vmapped over the
whole batch, with the level passed as a traced array, timed both with the batch split
over every local device (in the tuned set-up, `--cpu-cores`: one device per core) and
on one device (where a call runs one part of the batch per core from a thread pool,
see `jaxrobust.sharding`); the faster placement is reported, both figures are kept in
the row. The batch is put on the devices once (`sharding.place_batch`) before the
timed calls, as a sweep keeps it there over its levels; the seconds that copy took
are kept in the row (`place_s_by_placement`). Each main row's reference passes and
jaxrobust calls alternate (`common.interleaved`), so that its ratio compares one state
of a shared machine; the context rows reuse jaxrobust's time from the main row.

Run from the repository root: `python -m benchmarks.kernels`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    bench_parser,
    device_info,
    geometric_mean,
    interleaved,
    parse,
    print_table,
    save,
    time_call,
)
from jaxrobust import corruptions
from jaxrobust.metrics import ssim
from jaxrobust.sharding import local_mesh, place_batch, shard_batch

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
    """Times `vmap(fn)` over the batch two ways and keeps the faster: split over every
    local device (one per core on a CPU), and on one device (where XLA threads the
    large ops, such as `scale_up`'s matmul, over the cores itself).

    The batch is put on the devices once per placement (`sharding.place_batch`), before
    the timed calls, as a sweep keeps it there over its levels; the seconds that copy
    took are returned apart. Seconds: the median over at least `repeats` calls and
    0.5 s (a call of a few milliseconds swings by 2x on a shared machine).

    Returns `(out, compile_s, seconds, placement, seconds_by_placement,
    place_s_by_placement, call)`, `call` a blocking call of the faster placement.
    """
    level = jnp.asarray(level, jnp.float32 if np.ndim(level) == 0 else jnp.int32)
    placements = {"one device": local_mesh(1)}
    if jax.device_count() > 1:
        placements[f"split over {jax.device_count()} devices"] = local_mesh()
    timed = {}
    for placement, mesh in placements.items():
        batched = shard_batch(jax.vmap(fn, in_axes=(0, 0, None)), in_axes=(0, 0, None),
                              mesh=mesh)
        place_s, (k, x) = _place((keys, images), mesh)
        start = time.perf_counter()
        out = jax.block_until_ready(batched(k, x, level))
        compile_s = time.perf_counter() - start
        seconds = time_call(lambda b=batched, k=k, x=x: jax.block_until_ready(b(k, x, level)),
                            repeats=repeats, min_time=0.5)
        call = (lambda b=batched, k=k, x=x: jax.block_until_ready(b(k, x, level)))
        timed[placement] = (np.asarray(out), compile_s, seconds, place_s, call)
    best = min(timed, key=lambda k: timed[k][2])
    return (*timed[best][:3], best, {k: v[2] for k, v in timed.items()},
            {k: v[3] for k, v in timed.items()}, timed[best][4])


def _paired(fn, items, count, ours, repeats):
    """`(outputs, reference seconds per item, seconds of ours())`: `fn` on the first
    `count` items once for its outputs (and warm-up), then reference passes and
    `ours()` calls alternately (`common.interleaved`), so that a ratio compares one
    state of a shared machine."""
    outs = [fn(item) for item in items[:count]]
    ref_s, ours_s = interleaved(lambda: [fn(item) for item in items[:count]], ours,
                                repeats=repeats, min_time=1.0, budget_s=float("inf"))
    return outs, ref_s / count, ours_s


def _place(tree, mesh):
    """`(seconds, placed)`: `sharding.place_batch`, timed."""
    start = time.perf_counter()
    placed = jax.block_until_ready(place_batch(tree, mesh))
    return time.perf_counter() - start, placed


def _ref(fn, items, count, repeats: int = 3, budget_s: float = 1.0):
    """Seconds per item of `fn(item)` over the first `count` items (2-D images).

    Timed like ours: the median over `repeats` passes, when a pass takes under
    `budget_s` (a fast reference such as `cv2.resize` is over in milliseconds, and one
    pass swings by several times on a shared machine); a slow one is timed once.
    """
    outs, times = [], []
    while not times or (len(times) < repeats and times[0] < budget_s):
        outs = []
        start = time.perf_counter()
        for item in items[:count]:
            outs.append(fn(item))
        times.append(time.perf_counter() - start)
    return outs, float(np.median(times)) / count


#: Two of the corruption study's float radii (its loop's `intensity / 0.05`): disk(7.999..)
#: loses 2 boundary points of disk(8), disk(16.000..) is 34 x 34 and off-centre.
STUDY_FLOAT_RADII = (7.999999999999999, 16.000000000000004)


def run(n: int = 64, size: int = 174, radii=(1, 5, 10, 19), ref_images: int = 16,
        repeats: int = 3, float_radii=STUDY_FLOAT_RADII, log=print) -> dict:
    """Runs every row; returns the results payload.

    Whole radii pass the radius as a traced float32; `float_radii` (the study's) pass
    their exact footprint, traced (`corruptions.disk_footprint`), as the sweep does.
    """
    import cv2
    from skimage.filters import median, rank
    from skimage.metrics import structural_similarity
    from skimage.morphology import disk
    from skimage.util import random_noise

    images = bench_images(n, size)
    u8 = np.round(images[..., 0] * 255).astype(np.uint8)
    keys = jax.random.split(jax.random.key(0), n)
    rows = []

    def add(kernel, level, reference, ref_s, ours_s, compile_s, exact=None, note="",
            placement=None):
        row = {"kernel": kernel, "level": level, "reference": reference,
               "ref_images_per_s": None if ref_s is None else 1.0 / ref_s,
               "jaxrobust_images_per_s": None if ours_s is None else n / ours_s,
               "compile_s": compile_s, "exact": exact, "note": note}
        if placement is not None:
            best, by, place_s = placement
            row["placement"] = best
            row["jaxrobust_images_per_s_by_placement"] = {k: n / v for k, v in by.items()}
            row["place_s_by_placement"] = place_s
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
    out, comp, ours, *place, call = _ours(corruptions.scale_up, images, crop, keys, repeats)
    refs, ref_s, ours = _paired(lambda im: cv2.resize(im[crop:-crop, crop:-crop], (size, size),
                                                      interpolation=cv2.INTER_LINEAR),
                                images[..., 0], n, call, repeats)
    err = float(np.max(np.abs(out[..., 0] - np.asarray(refs))))
    add("scale_up", crop, "cv2.resize INTER_LINEAR", ref_s, ours, comp, exact=err < 1e-4,
        note=f"max abs diff {err:.2g}", placement=place)

    for r in radii:
        out, comp, ours, *place, call = _ours(corruptions.median_blur, images, r, keys,
                                              repeats)
        count = min(n, ref_images)
        refs, ref_s, ours = _paired(lambda im, r=r: median(im, disk(r), mode="nearest"),
                                    images[..., 0], count, call, repeats)
        exact = bool(np.array_equal(out[:count, ..., 0], np.asarray(refs)))
        add("median_blur", r, "skimage.filters.median", ref_s, ours, comp, exact=exact,
            note=f"reference timed on {count} images", placement=place)
        _, rank_s = _ref(lambda im, r=r: rank.median(im, disk(r)), u8, n, repeats)
        add("median_blur", r, "context: skimage rank.median (u8)", rank_s, ours, None,
            note="other border rule", placement=place)
        _, cv_s = _ref(lambda im, r=r: cv2.medianBlur(im, 2 * r + 1), u8, n, repeats)
        add("median_blur", r, "context: cv2.medianBlur (u8)", cv_s, ours, None,
            note="square window, not a disk", placement=place)

    for r in float_radii:
        footprint = np.asarray(corruptions.disk_footprint(r))
        out, comp, ours, *place, call = _ours(corruptions.median_blur, images, footprint,
                                              keys, repeats)
        count = min(n, ref_images)
        refs, ref_s, ours = _paired(lambda im, r=r: median(im, disk(r), mode="nearest"),
                                    images[..., 0], count, call, repeats)
        exact = bool(np.array_equal(out[:count, ..., 0], np.asarray(refs)))
        add("median_blur", r, "skimage.filters.median", ref_s, ours, comp, exact=exact,
            note=f"float radius {r!r}, traced footprint; reference timed on {count} images",
            placement=place)

    sigma = 0.05
    out, comp, ours, *place, call = _ours(corruptions.gaussian_noise, images, sigma, keys,
                                          repeats)
    refs, ref_s, ours = _paired(
        lambda im: random_noise(im, mode="gaussian", var=sigma**2, clip=True),
        images[..., 0], n, call, repeats)
    add("gaussian_noise", sigma, "skimage.util.random_noise", ref_s, ours, comp,
        note="same distribution, different generator", placement=place)

    noisy = out
    batched = shard_batch(jax.vmap(ssim), in_axes=(0, 0))
    _, placed = _place((images, noisy), local_mesh())
    start = time.perf_counter()
    scores = np.asarray(jax.block_until_ready(batched(*placed)))
    comp = time.perf_counter() - start
    ref_scores, ref_s, ours = _paired(
        lambda ab: structural_similarity(*ab, data_range=1.0, channel_axis=-1),
        list(zip(images, noisy, strict=True)), n,
        lambda: jax.block_until_ready(batched(*placed)), repeats)
    err = float(np.max(np.abs(scores - np.asarray(ref_scores))))
    add("ssim", 7, "skimage structural_similarity", ref_s, ours, comp, exact=err < 1e-5,
        note=f"max abs diff {err:.2g}")

    info = device_info()
    return {"benchmark": "kernels", "device": info, "images": n,
            "shape": [size, size, 1], "dtype": "float32, 8-bit-valued",
            "batch": n, "repeats": repeats, "rows": rows,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


_RGB_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")


def rgb_images(n: int, size: int, *, seed: int = 0) -> np.ndarray:
    """`(n, size, size, 3)` 8-bit-valued float32 square crops of scikit-image's colour
    photos (ImageNet-C's protocol: shorter side resized, centre... here random crops)."""
    from skimage import data, transform

    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)() / 255.0 for name in _RGB_SOURCES]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        short = min(photo.shape[:2])
        side = int(rng.integers(short // 2, short + 1))
        y = int(rng.integers(0, photo.shape[0] - side + 1))
        x = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = transform.resize(photo[y:y + side, x:x + side], (size, size), anti_aliasing=True)
        out.append(np.round(crop * 255.0) / 255.0)
    return np.asarray(out, np.float32)


def run_suite(n: int = 16, size: int = 224, ref_images: int = 2, repeats: int = 3,
              names=None, chunk: int = 4, log=print) -> dict:
    """ImageNet-C's 15 corruptions x 5 severities: `imagecorruptions` one image at a
    time (patched only where it cannot run, see `benchmarks.reference`) against
    jaxrobust, one compiled call per corruption vmapped over images and severities
    (independent keys per image and severity), called on `chunk` images (x 5
    severities) at a time as a data pipeline would, each call split over every local
    device (`shard_batch`), every output kept until the pass ends; the images are put
    on the devices once, before the timed calls. (One call over all images would time
    the page faults of a fresh 48 MB output buffer, and a `lax.map` over chunks the
    copy of every output into the stacked result, rather than the kernels.) Reference
    and jaxrobust passes alternate (`common.interleaved`), so that both sides of a
    ratio see the same state of a shared machine."""
    import warnings

    from benchmarks import reference

    names = list(names or corruptions.IMAGENET_C)
    ic = reference.load()
    images = rgb_images(n, size)
    u8 = np.round(images * 255).astype(np.uint8)
    severities = np.arange(1, 6, dtype=np.float32)
    rows = []
    for name in names:
        c = corruptions.get(name)
        levels = jnp.asarray(corruptions.severity(name, severities, image_size=size))
        def reference_pass(name=name):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for image in u8[:ref_images]:
                    for s in range(1, 6):
                        ic.corrupt(image, s, name)

        fn = jax.vmap(jax.vmap(c.apply, in_axes=(0, None, 0)), in_axes=(0, 0, None))
        fn = shard_batch(fn, in_axes=(0, 0, None))
        keys = jax.random.split(jax.random.key(0), n * 5).reshape(n, 5)
        batches = [_place((keys[i:i + chunk], images[i:i + chunk]), local_mesh())[1]
                   for i in range(0, n, chunk)]

        def ours_pass(fn=fn, batches=batches, levels=levels):
            jax.block_until_ready([fn(k, x, levels) for k, x in batches])

        start = time.perf_counter()
        jax.block_until_ready(fn(*batches[0], levels))
        compile_s = time.perf_counter() - start
        jax.block_until_ready(fn(*batches[-1], levels))  # a shorter last batch: its shape
        ref_s, ours = interleaved(reference_pass, ours_pass, repeats=repeats)
        ref_s /= ref_images * 5
        ours /= n * 5
        rows.append({"kernel": name, "level": "severities 1-5",
                     "reference": "imagecorruptions 1.1.2", "ref_images_per_s": 1.0 / ref_s,
                     "jaxrobust_images_per_s": 1.0 / ours, "speedup": ref_s / ours,
                     "compile_s": compile_s})
        log(f"  {name:18s} ref {1 / ref_s:8.1f} img/s  ours {1 / ours:8.1f} img/s  "
            f"x{ref_s / ours:.1f}")
    ratios = [r["speedup"] for r in rows]
    slowest = min(rows, key=lambda r: r["speedup"])
    summary = {"geometric_mean_speedup": geometric_mean(ratios),
               "median_speedup": float(np.median(ratios)),
               "slowest": slowest["kernel"], "slowest_speedup": slowest["speedup"],
               "below_1x": [r["kernel"] for r in rows if r["speedup"] < 1.0]}
    log(f"  per-corruption ratio: geometric mean x{summary['geometric_mean_speedup']:.1f}, "
        f"slowest {summary['slowest']} x{summary['slowest_speedup']:.2f}")
    return {"images": n, "reference_images": ref_images, "chunk": chunk,
            "shape": [size, size, 3], "dtype": "float32, 8-bit-valued",
            "rows": rows, "summary": summary}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__, "kernels")
    parser.add_argument("--images", type=int, default=64,
                        help="grey images per kernel batch (8-bit-valued photo crops)")
    parser.add_argument("--size", type=int, default=174, help="grey image side in pixels")
    parser.add_argument("--radii", type=int, nargs="+", default=[1, 5, 10, 19],
                        help="median disk radii to time")
    parser.add_argument("--float-radii", type=float, nargs="*", default=list(STUDY_FLOAT_RADII),
                        help="float median radii (the study's), run as traced footprints")
    parser.add_argument("--ref-images", type=int, default=16,
                        help="images the slow skimage median is timed on")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes per row (the median is kept)")
    parser.add_argument("--suite-images", type=int, default=16,
                        help="224x224 RGB images of the ImageNet-C sweep (0 skips it)")
    parser.add_argument("--suite-ref-images", type=int, default=2,
                        help="images imagecorruptions is timed on, x 5 severities each")
    parser.add_argument("--suite-only", action="store_true",
                        help="run the ImageNet-C sweep alone")
    args = parse(parser, argv)
    if args.suite_only:
        payload = {"benchmark": "kernels", "device": device_info(), "rows": [],
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    else:
        payload = run(args.images, args.size, tuple(args.radii), args.ref_images,
                      args.repeats, tuple(args.float_radii))
    payload["setup"] = args.setup
    if args.suite_images:
        print("ImageNet-C suite, 15 corruptions x 5 severities:")
        payload["imagenet_c"] = run_suite(args.suite_images, ref_images=args.suite_ref_images,
                                          repeats=args.repeats)
    name = "imagenet_c" if args.suite_only else "kernels"
    out = save(payload, name + ("-cpu-cores" if args.cpu_cores else ""), args.out)
    print()
    print_table(payload["rows"], [
        ("kernel", "kernel", "{}"), ("level", "level", "{:.16g}"), ("reference", "reference", "{}"),
        ("ref_images_per_s", "ref img/s", "{:.1f}"),
        ("jaxrobust_images_per_s", "jaxrobust img/s", "{:.1f}"),
        ("speedup", "ratio", "{:.1f}x"), ("exact", "exact", "{}"),
        ("placement", "placement", "{}"),
    ])
    if "imagenet_c" in payload:
        print()
        print_table(payload["imagenet_c"]["rows"], [
            ("kernel", "corruption", "{}"), ("ref_images_per_s", "imagecorruptions img/s",
                                             "{:.1f}"),
            ("jaxrobust_images_per_s", "jaxrobust img/s", "{:.1f}"),
            ("speedup", "ratio", "{:.2f}x"),
        ])
        summary = payload["imagenet_c"]["summary"]
        print(f"per-corruption ratio: geometric mean {summary['geometric_mean_speedup']:.1f}x, "
              f"slowest {summary['slowest']} {summary['slowest_speedup']:.2f}x "
              f"({payload['setup']})")
    print(f"\nwrote {out}")
    return payload


if __name__ == "__main__":
    main()
