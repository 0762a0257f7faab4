"""Sweep benchmark: the study's loop vs `jaxrobust.sweep.run`, same images and weights.

The study's way, transcribed: for every corruption and step, corrupt each image
with scikit-image / OpenCV, compute scikit-image's SSIM to the clean image, then call
the model once on the step's batch. jaxrobust's way: `sweep.run` (one compiled
program per corruption, levels by `lax.map`, images by `vmap`, split over devices).
Both run the same Flax model (a small CNN) with the same weights on the study's
schedule (crop 50, noise 50, blur 20 steps). `--protocol study` (the default) is the
study's own computation, which both sides then compute alike: whole-pixel crops, float
disk radii, SSIM range 2. `--protocol continuous` (the main job's) sweeps fractional
crops, which the study's loop still crops to `int(level)` pixels (same cost). Where two
crop steps give the same width, jaxrobust computes that image once (`sweep.run` does so
for any kernel that draws nothing); the JSON counts the distinct levels. Reported:
(image, level) pairs per second each way, and the ratio.

Run from the repository root: `python -m benchmarks.sweep`.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import ROOT, bench_parser, device_info, parse, save
from benchmarks.kernels import bench_images
from jaxrobust import corruptions, models, sweep

CLASSES = ["original", "scale_up", "median_blur", "gaussian_noise"]


def _study_loop(apply_fn, params, images, protocol: str, seed: int = 0):
    """The study's sweep: one image and one step at a time; returns seconds and accuracies."""
    import cv2
    from skimage.filters import median
    from skimage.metrics import structural_similarity
    from skimage.morphology import disk
    from skimage.util import random_noise

    size = images.shape[1]
    predict = jax.jit(apply_fn)
    rng = np.random.default_rng(seed)
    data_range = corruptions.SSIM_DATA_RANGE[protocol]
    accuracy = {}
    start = time.perf_counter()
    for c, name in enumerate(corruptions.names("study"), start=1):
        for level in corruptions.seed_levels(name, image_size=size, protocol=protocol):
            batch, scores = [], []
            for image in images[..., 0]:
                if name == "scale_up":
                    k = int(level)
                    out = image if k == 0 else cv2.resize(image[k:size - k, k:size - k],
                                                          (size, size),
                                                          interpolation=cv2.INTER_LINEAR)
                elif name == "median_blur":
                    out = median(image, disk(float(level)), mode="nearest")
                else:
                    out = random_noise(image, mode="gaussian", var=float(level) ** 2,
                                       clip=True, rng=rng).astype(np.float32)
                scores.append(structural_similarity(image, out, data_range=data_range))
                batch.append(out)
            x = jnp.asarray(np.asarray(batch, np.float32)[..., None])
            logits = np.asarray(predict(params, x))  # NumPy, as Keras' predict returns
            accuracy[name, float(level)] = float(np.mean(np.argmax(logits, -1) == c))
    return time.perf_counter() - start, accuracy


def run(n: int = 64, ref_images: int = 8, size: int = 174, *, protocol: str = "study",
        repeats: int = 3, reference: bool = True, log=print) -> dict:
    """Times both sides `repeats` times, alternating (ours, study loop, ours, ...), so
    that a slow spell of a shared machine weighs on both; the medians give the ratio."""
    images = bench_images(n, size)
    net = models.get("small_cnn", num_classes=4, input_shape=(size, size, 1), width=0.5,
                     hidden=64)
    apply_fn, params = models.pure(net)
    levels = {c: corruptions.seed_levels(c, image_size=size, protocol=protocol)
              for c in corruptions.names("study")}
    pairs = sum(len(v) for v in levels.values())
    spec = jax.ShapeDtypeStruct(images.shape[1:], jnp.float32)
    distinct = sum(len(sweep._distinct_levels(corruptions.get(c).apply, spec,
                                              np.asarray(corruptions.kernel_levels(c, v)))[0])
                   for c, v in levels.items())

    def ours():
        start = time.perf_counter()
        sweep.run(jax.random.key(0), {"cnn": (apply_fn, params)}, images,
                  levels=levels, class_names={"cnn": CLASSES}, batch_size=n,
                  protocol=protocol, log=lambda s: None)
        return time.perf_counter() - start

    first = ours()
    if reference:  # the study loop's model call, compiled before it is timed
        jax.block_until_ready(jax.jit(apply_fn)(params, jnp.asarray(images[:ref_images])))
    ours_s, ref_s = [], []
    for r in range(repeats):
        ours_s.append(ours())
        log(f"jaxrobust: {n} images x {pairs} levels in {ours_s[-1]:.2f} s (first call "
            f"{first:.1f} s, {jax.device_count()} device(s))")
        if reference:
            ref_s.append(_study_loop(apply_fn, params, images[:ref_images], protocol, seed=r)[0])
            log(f"study loop: {ref_images} images x {pairs} levels in {ref_s[-1]:.2f} s")
    steady = float(np.median(ours_s))
    payload = {"benchmark": "sweep", "device": device_info(), "images": n,
               "reference_images": ref_images, "shape": [size, size, 1],
               "protocol": protocol, "levels_per_image": pairs,
               "distinct_levels_computed": distinct,
               "model": "small_cnn width 0.5, hidden 64", "repeats": repeats,
               "jaxrobust_seconds": steady, "jaxrobust_seconds_each": ours_s,
               "jaxrobust_first_call_seconds": first,
               "jaxrobust_image_levels_per_s": n * pairs / steady,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if reference:
        ref = float(np.median(ref_s))
        payload["reference_seconds"] = ref
        payload["reference_seconds_each"] = ref_s
        payload["reference_image_levels_per_s"] = ref_images * pairs / ref
        payload["speedup"] = (payload["jaxrobust_image_levels_per_s"]
                              / payload["reference_image_levels_per_s"])
    return payload


def _tuned(args) -> dict:
    """jaxrobust's side in the tuned set-up (one device per core), in a fresh process:
    the device count is fixed when JAX starts."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "tuned.json")
        subprocess.run([sys.executable, "-m", "benchmarks.sweep", "--cpu-cores",
                        "--ours-only", "--images", str(args.images), "--size", str(args.size),
                        "--protocol", args.protocol, "--repeats", str(args.repeats),
                        "--out", out], check=True, cwd=ROOT)
        with open(out) as f:
            return json.load(f)


def main(argv=None) -> dict:
    parser = bench_parser(__doc__, "sweep")
    parser.add_argument("--images", type=int, default=64, help="images jaxrobust sweeps")
    parser.add_argument("--ref-images", type=int, default=8,
                        help="images the study's loop is timed on")
    parser.add_argument("--size", type=int, default=174, help="image side in pixels")
    parser.add_argument("--protocol", choices=corruptions.PROTOCOLS, default="study",
                        help="the levels: the study's own computation (default) or the "
                        "main job's continuous family")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of each side, alternating; medians are reported")
    parser.add_argument("--ours-only", action="store_true",
                        help="time jaxrobust alone (no study loop)")
    parser.add_argument("--no-tuned", action="store_true",
                        help="do not also time jaxrobust in the tuned set-up (--cpu-cores) "
                        "in a second process")
    args = parse(parser, argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}.")
    payload = run(args.images, args.ref_images, args.size, protocol=args.protocol,
                  repeats=args.repeats, reference=not args.ours_only)
    payload["setup"] = args.setup
    if not (args.ours_only or args.cpu_cores or args.no_tuned):
        tuned = _tuned(args)
        rate = tuned["jaxrobust_image_levels_per_s"]
        payload["tuned"] = {
            "setup": tuned["setup"], "device_count": tuned["device"]["device_count"],
            "jaxrobust_seconds": tuned["jaxrobust_seconds"],
            "jaxrobust_image_levels_per_s": rate,
            "speedup": rate / payload["reference_image_levels_per_s"],
            "default_over_tuned": payload["jaxrobust_image_levels_per_s"] / rate}
    out = save(payload, "sweep" + ("-continuous" if args.protocol == "continuous" else "")
               + ("-cpu-cores" if args.cpu_cores else ""), args.out)
    if "speedup" in payload:
        print(f"{payload['setup']}: speedup {payload['speedup']:.1f}x "
              f"({payload['jaxrobust_image_levels_per_s']:.0f} vs "
              f"{payload['reference_image_levels_per_s']:.0f} image-levels/s)")
    if "tuned" in payload:
        print(f"{payload['tuned']['setup']}: speedup {payload['tuned']['speedup']:.1f}x "
              f"({payload['tuned']['jaxrobust_image_levels_per_s']:.0f} image-levels/s); "
              f"default / tuned = {payload['tuned']['default_over_tuned']:.2f}")
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
