"""Scale benchmark: a large sweep on one machine, its time and its peak memory.

`n` phantom images (default 10,000 at 174 x 174) through `sweep.run` with a small
CNN under the study's blur schedule (20 radii), the chunk size chosen from the free
memory (`batch_size=None`). The sweep writes its finished cells to `--work` (default
`runs/scale-<n>`), so an interrupted run continues where it stopped. Reported: wall
time, (image, level) pairs per second, the chunk size chosen, and the process's peak
resident memory. The model has random weights: this measures throughput and memory,
not accuracy.

Run from the repository root: `python -m benchmarks.scale`.
"""

from __future__ import annotations

import os
import resource
import time

import jax

from benchmarks.common import bench_parser, device_info, parse, save
from jaxrobust import corruptions, models, store, sweep
from jaxrobust.data import load_phantom

CLASSES = ["original", "scale_up", "median_blur", "gaussian_noise"]


def _peak_rss_bytes() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # Linux: KiB


def run(n: int = 10_000, size: int = 174, corruption: str = "median_blur",
        work: str | None = None, log=print) -> dict:
    start = time.perf_counter()
    images = load_phantom(n, image_size=size, seed=0).images
    log(f"{n} phantom images of {images.shape[1:]} in {time.perf_counter() - start:.0f} s "
        f"({images.nbytes / 2**30:.2f} GiB)")
    net = models.get("small_cnn", num_classes=4, input_shape=(size, size, 1), width=0.5,
                     hidden=64)
    apply_fn, params = models.pure(net)
    levels = corruptions.seed_levels(corruption, image_size=size)
    work = work or os.path.join("runs", f"scale-{n}")
    start = time.perf_counter()
    table, per_image = sweep.run(jax.random.key(0), {"cnn": (apply_fn, params)}, images,
                                 corruptions=(corruption,), levels={corruption: levels},
                                 class_names={"cnn": CLASSES}, batch_size=None,
                                 cells_dir=os.path.join(work, "sweep_cells"), log=log)
    store.write_results(work, table, per_image)
    chosen = list(table.attrs["batch_sizes"].values())
    seconds = time.perf_counter() - start
    pairs = n * len(levels)
    return {"benchmark": "scale", "device": device_info(), "images": n,
            "shape": [size, size, 1], "corruption": corruption, "levels": len(levels),
            "model": "small_cnn width 0.5, hidden 64", "chunk_images_per_device": chosen,
            "seconds": seconds, "image_levels_per_s": pairs / seconds,
            "peak_rss_gib": _peak_rss_bytes() / 2**30, "rows": len(table),
            "note": "seconds cover this invocation only; a resumed run counts only the "
                    "chunks it computed",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__, "scale")
    parser.add_argument("--images", type=int, default=10_000, help="images to sweep")
    parser.add_argument("--size", type=int, default=174, help="image side in pixels")
    parser.add_argument("--corruption", default="median_blur",
                        help="the corruption swept over its study schedule")
    parser.add_argument("--work", help="sweep folder (resumable; default runs/scale-N)")
    args = parse(parser, argv)
    payload = run(args.images, args.size, args.corruption, args.work)
    payload["setup"] = args.setup
    out = save(payload, "scale", args.out)
    print(f"{payload['images']} images x {payload['levels']} levels in "
          f"{payload['seconds']:.0f} s, peak memory {payload['peak_rss_gib']:.2f} GiB; "
          f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
