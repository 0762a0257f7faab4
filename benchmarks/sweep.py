"""Sweep benchmark: the study's loop vs `jaxrobust.sweep.run`, same images and weights.

The study's way, transcribed: for every corruption and step, corrupt each image
with scikit-image / OpenCV, compute scikit-image's SSIM to the clean image, then call
the model once on the step's batch. jaxrobust's way: `sweep.run` (one compiled
program per corruption, levels by `lax.map`, images by `vmap`, split over devices).
Both run the same Flax model (a small CNN) with the same weights; the protocol is
the study's (crop 50, noise 50, blur 20 steps). Reported: (image, level) pairs per
second each way, and the ratio.

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


def _study_loop(apply_fn, params, images, seed: int = 0):
    """The study's sweep: one image and one step at a time; returns seconds and accuracies."""
    import cv2
    from skimage.filters import median
    from skimage.metrics import structural_similarity
    from skimage.morphology import disk
    from skimage.util import random_noise

    size = images.shape[1]
    predict = jax.jit(apply_fn)
    rng = np.random.default_rng(seed)
    accuracy = {}
    start = time.perf_counter()
    for c, name in enumerate(corruptions.names("study"), start=1):
        for level in corruptions.seed_levels(name, image_size=size):
            batch, scores = [], []
            for image in images[..., 0]:
                if name == "scale_up":
                    k = int(level)
                    out = image if k == 0 else cv2.resize(image[k:size - k, k:size - k],
                                                          (size, size),
                                                          interpolation=cv2.INTER_LINEAR)
                elif name == "median_blur":
                    out = median(image, disk(int(level)), mode="nearest")
                else:
                    out = random_noise(image, mode="gaussian", var=float(level) ** 2,
                                       clip=True, rng=rng).astype(np.float32)
                scores.append(structural_similarity(image, out, data_range=1.0))
                batch.append(out)
            logits = predict(params, jnp.asarray(np.asarray(batch, np.float32)[..., None]))
            accuracy[name, float(level)] = float(np.mean(np.argmax(logits, -1) == c))
    return time.perf_counter() - start, accuracy


def run(n: int = 64, ref_images: int = 8, size: int = 174, *, reference: bool = True,
        log=print) -> dict:
    images = bench_images(n, size)
    net = models.get("small_cnn", num_classes=4, input_shape=(size, size, 1), width=0.5,
                     hidden=64)
    apply_fn, params = models.pure(net)
    levels = {c: corruptions.seed_levels(c, image_size=size) for c in corruptions.names("study")}
    pairs = sum(len(v) for v in levels.values())

    def ours():
        return sweep.run(jax.random.key(0), {"cnn": (apply_fn, params)}, images,
                         levels=levels, class_names={"cnn": CLASSES}, batch_size=n,
                         log=lambda s: None)

    start = time.perf_counter()
    ours()
    first = time.perf_counter() - start
    start = time.perf_counter()
    ours()
    steady = time.perf_counter() - start
    log(f"jaxrobust: {n} images x {pairs} levels in {steady:.2f} s (first call {first:.1f} s, "
        f"{jax.device_count()} device(s))")
    payload = {"benchmark": "sweep", "device": device_info(), "images": n,
               "reference_images": ref_images, "shape": [size, size, 1],
               "levels_per_image": pairs, "model": "small_cnn width 0.5, hidden 64",
               "jaxrobust_seconds": steady, "jaxrobust_first_call_seconds": first,
               "jaxrobust_image_levels_per_s": n * pairs / steady,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if reference:
        ref_s, _ = _study_loop(apply_fn, params, images[:ref_images])
        log(f"study loop: {ref_images} images x {pairs} levels in {ref_s:.2f} s")
        payload["reference_seconds"] = ref_s
        payload["reference_image_levels_per_s"] = ref_images * pairs / ref_s
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
                        "--out", out], check=True, cwd=ROOT)
        with open(out) as f:
            return json.load(f)


def main(argv=None) -> dict:
    parser = bench_parser(__doc__, "sweep")
    parser.add_argument("--images", type=int, default=64, help="images jaxrobust sweeps")
    parser.add_argument("--ref-images", type=int, default=8,
                        help="images the study's loop is timed on")
    parser.add_argument("--size", type=int, default=174, help="image side in pixels")
    parser.add_argument("--ours-only", action="store_true",
                        help="time jaxrobust alone (no study loop)")
    parser.add_argument("--no-tuned", action="store_true",
                        help="do not also time jaxrobust in the tuned set-up (--cpu-cores) "
                        "in a second process")
    args = parse(parser, argv)
    payload = run(args.images, args.ref_images, args.size, reference=not args.ours_only)
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
    out = save(payload, "sweep" + ("-cpu-cores" if args.cpu_cores else ""), args.out)
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
