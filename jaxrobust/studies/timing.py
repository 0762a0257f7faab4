"""`jaxrobust bench`: what attribution and sweeps cost on the user's own model.

No reference library is involved (those comparisons are `benchmarks/`, in the source
tree): this times jaxrobust on a trained checkpoint and the config's test images, in
the process's own set-up, and reports per image.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np

from jaxrobust import _io, _prng


def _median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(config, checkpoint: str, *, steps=(16, 32, 64), images: int = 16,
        corruption: str | None = None, repeats: int = 3, out: str | None = None,
        log: Callable[[str], None] = print) -> dict:
    """Times Integrated Gradients and a sweep on `checkpoint`, per image.

    IG (black baseline, Gauss-Legendre, predicted class as target) at each number of
    path `steps`, on `images` test images, against its floor: one jitted
    forward+backward pass over `steps x images` images of the same model (what any
    IG must compute). The sweep: `sweep.run` of one corruption (default: the config's
    first) over its default levels, in image-levels per second, after a first call
    compiled it. Medians over `repeats` calls.

    Returns:
        The measurements as a dict (also written as JSON to `out` when given).

    Raises:
        ValueError: `images < 1`, a step count below 1, or a checkpoint whose input
            shape differs from the config's images.
    """
    from jaxrobust import attribution, corruptions, sweep, train
    from jaxrobust.studies.corruption import load_split

    if images < 1 or not steps or min(steps) < 1:
        raise ValueError(f"--images and every --steps must be at least 1, got {images} and "
                         f"{list(steps)}.")
    apply_fn, params, meta = train.restore(checkpoint)
    ds, _, test_idx = load_split(config, log=lambda s: None)
    x = ds.images[test_idx][:images]
    if list(x.shape[1:]) != meta["input_shape"]:
        raise ValueError(f"checkpoint takes images of shape {meta['input_shape']}, the config's "
                         f"are {list(x.shape[1:])}; set data.image_size to match.")
    n = len(x)
    targets = np.asarray(jax.jit(apply_fn)(params, x).argmax(-1))
    result = {"checkpoint": checkpoint, "model": meta.get("model"), "images": n,
              "shape": list(x.shape[1:]), "device": f"{jax.device_count()} x "
              f"{jax.devices()[0].device_kind}", "jax": jax.__version__, "ig": []}
    grad = jax.jit(lambda p, v, t: attribution.saliency(apply_fn, p, v, t, absolute=False))
    for s in steps:
        ig = jax.jit(lambda p, v, t, s=s: attribution.integrated_gradients(
            apply_fn, p, v, t, steps=s))
        ig_s = _median_seconds(lambda ig=ig: ig(params, x, targets), repeats)
        big, big_t = np.repeat(x, s, axis=0), np.repeat(targets, s)
        floor_s = _median_seconds(lambda big=big, big_t=big_t: grad(params, big, big_t),
                                  repeats)
        row = {"steps": s, "ig_ms_per_image": 1e3 * ig_s / n,
               "floor_ms_per_image": 1e3 * floor_s / n, "ig_over_floor": ig_s / floor_s}
        result["ig"].append(row)
        log(f"IG, {s:4d} steps: {row['ig_ms_per_image']:8.2f} ms per image "
            f"(forward+backward floor {row['floor_ms_per_image']:.2f} ms, "
            f"x{row['ig_over_floor']:.2f})")
    name = corruptions.get(corruption or config.task.corruptions[0]).name
    levels = corruptions.seed_levels(name, image_size=x.shape[1],
                                     protocol=config.sweep.protocol)
    labels = ds.labels[test_idx][:n]

    def once():
        return sweep.run(_prng.stream(config.seed, "sweep"), {"model": (apply_fn, params)}, x,
                         labels, corruptions=(name,), levels={name: levels}, target="labels",
                         protocol=config.sweep.protocol, log=lambda s: None)

    once()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    sweep_s = (time.perf_counter() - start) / repeats
    result["sweep"] = {"corruption": name, "levels": len(levels),
                       "image_levels_per_s": n * len(levels) / sweep_s}
    log(f"sweep of {name}: {n} images x {len(levels)} levels, "
        f"{result['sweep']['image_levels_per_s']:.0f} image-levels per second")
    if out:
        _io.write_json(out, result)
        log(f"wrote {out}")
    return result
