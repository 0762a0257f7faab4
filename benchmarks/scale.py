"""Scale benchmark: streamed sweeps, their throughput and their peak memory at N and 10 N.

Each case runs in its own process (so that its peak resident memory is its own) and
sweeps a lazy source with the default set-up (`sweep.run(..., batch_size=None)`: the
chunk size from the free memory), on-device records, cells in a scratch folder:

- `memory`: synthetic uint8 64 x 64 x 3 images made per index on demand (nothing
  held), a 100-class small CNN, Gaussian noise at severities 1-5, N = 2,000 and 20,000:
  memory must not grow with N beyond the per-image records;
- `folder`: 20,000 PNG files (32 x 32 RGB, 10 class sub-folders) written once, then
  swept through the lazy `folder:` source (`data.stream.FolderSource`);
- `imagenet`: synthetic uint8 224 x 224 x 3 images, VGG16 at width 1/8 with a
  1000-class head, Gaussian noise at severities 1-5, N and 10 N; the projected time of
  ImageNet-C (50,000 images x 15 corruptions x 5 severities) at the measured rate.

Reported per run: wall time, image-levels per second, peak resident memory (the
process's `ru_maxrss`) and the memory before the sweep began. The models have random
weights: this measures throughput and memory, not accuracy.

Run from the repository root: `python -m benchmarks.scale [--cases memory folder
imagenet] [--quick]`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.common import ROOT, bench_parser, device_info, parse, save

IMAGENET_C = 50_000 * 15 * 5  # images x corruptions x severities


class Synthetic:
    """`n` uint8 images of `shape`, each made from its index when asked for."""

    def __init__(self, n: int, shape: tuple[int, int, int], classes: int):
        self.n, self.shape, self.classes = n, shape, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx):
        import numpy as np

        idx = np.asarray(idx)
        images = np.stack([np.random.default_rng(int(i)).integers(0, 256, self.shape,
                                                                  dtype=np.uint8)
                           for i in idx])
        return images, (idx % self.classes).astype(np.int32)


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0 / 2**30  # Linux: KiB


def _write_folder(root: str, n: int, size: int = 32, classes: int = 10) -> None:
    import numpy as np
    from skimage import io

    for c in range(classes):
        os.makedirs(os.path.join(root, f"class{c:02d}"), exist_ok=True)
    for i in range(n):
        image = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
        io.imsave(os.path.join(root, f"class{i % classes:02d}", f"{i:06d}.png"), image,
                  check_contrast=False)


def child(spec: dict) -> dict:
    """One sweep in this process, as `spec` says; its figures."""
    import jax

    from jaxrobust import corruptions, models, sweep
    from jaxrobust.data import stream

    shape = tuple(spec["shape"])
    if spec["source"] == "folder":
        source = stream.FolderSource(spec["folder"], image_size=shape[0], channels=shape[2])
    else:
        source = Synthetic(spec["n"], shape, spec["classes"])
    net = models.get(spec["model"], num_classes=spec["classes"], input_shape=shape,
                     width=spec["width"], hidden=spec["hidden"])
    apply_fn, params = models.pure(net)
    levels = [float(corruptions.severity("gaussian_noise", s, image_size=shape[0]))
              for s in range(1, 6)]  # ImageNet-C's severities 1..5
    before = _rss_gib()
    start = time.perf_counter()
    table, _ = sweep.run(jax.random.key(0), {"m": (apply_fn, params)}, source,
                         corruptions=("gaussian_noise",), levels={"gaussian_noise": levels},
                         target="labels", batch_size=None, cells_dir=spec["cells"],
                         log=lambda s: None)
    seconds = time.perf_counter() - start
    pairs = len(source) * len(levels)
    return {"images": len(source), "levels": len(levels), "seconds": seconds,
            "image_levels_per_s": pairs / seconds, "peak_rss_gib": _rss_gib(),
            "rss_before_sweep_gib": before,
            "chunk_images_per_device": list(table.attrs["batch_sizes"].values()),
            "top5_accuracy_mean": float(table["top5_accuracy"].mean())
            if "top5_accuracy" in table else None}


def _run_child(spec: dict, env_flags: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--child", json.dumps(spec),
                          *env_flags], cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


CASES = {
    "memory": dict(source="synthetic", shape=[64, 64, 3], classes=100, model="small_cnn",
                   width=0.5, hidden=64, sizes=[2_000, 20_000]),
    "folder": dict(source="folder", shape=[32, 32, 3], classes=100, model="small_cnn",
                   width=0.5, hidden=64, sizes=[20_000]),
    "imagenet": dict(source="synthetic", shape=[224, 224, 3], classes=1000, model="vgg16",
                     width=0.125, hidden=256, sizes=[64, 640]),
}


def run(cases, *, quick: bool = False, flags=(), log=print) -> dict:
    scratch = tempfile.mkdtemp(prefix="jaxrobust-scale-")
    results = {}
    try:
        for name in cases:
            case = dict(CASES[name])
            sizes = [max(8, s // 100) for s in case.pop("sizes")] if quick else case.pop("sizes")
            rows = []
            for r, n in enumerate(sizes):
                spec = {**case, "n": n, "cells": os.path.join(scratch, f"{name}-{r}")}
                if case["source"] == "folder":
                    spec["folder"] = os.path.join(scratch, f"png-{r}")
                    start = time.perf_counter()
                    _write_folder(spec["folder"], n, size=case["shape"][0])
                    log(f"{name}: wrote {n} PNG files in {time.perf_counter() - start:.0f} s")
                row = _run_child(spec, list(flags))
                log(f"{name}: {n} images x {row['levels']} levels in {row['seconds']:.1f} s, "
                    f"{row['image_levels_per_s']:.0f} image-levels/s, peak "
                    f"{row['peak_rss_gib']:.2f} GiB (before the sweep "
                    f"{row['rss_before_sweep_gib']:.2f})")
                rows.append(row)
            entry = {"case": case, "runs": rows}
            if len(rows) == 2:
                entry["peak_rss_ratio_10x_images"] = (rows[1]["peak_rss_gib"]
                                                      / rows[0]["peak_rss_gib"])
            if name == "imagenet":
                rate = rows[-1]["image_levels_per_s"]
                entry["projected_imagenet_c_hours"] = IMAGENET_C / rate / 3600
                entry["projection_note"] = (
                    "50,000 images x 15 corruptions x 5 severities at the Gaussian-noise "
                    "rate of the larger run; other corruptions cost more or less per image")
                entry["memory_note"] = (
                    "peak memory follows the chunk the free memory allows (a quarter of "
                    "it), not N: the smaller run's chunk is capped by its N; at equal "
                    "chunks memory does not grow with N (the memory case)")
            results[name] = entry
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def main(argv=None) -> dict:
    parser = bench_parser(__doc__, "scale")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES),
                        help="which cases to run")
    parser.add_argument("--quick", action="store_true",
                        help="1/100 of the images (a smoke test of the benchmark itself)")
    parser.add_argument("--child", help=argparse_suppress())
    args = parse(parser, argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    flags = ["--cpu-cores"] if args.cpu_cores else []
    payload = {"benchmark": "scale", "device": device_info(), "setup": args.setup,
               "quick": args.quick, "cases": run(args.cases, quick=args.quick, flags=flags),
               "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = save(payload, "scale-quick" if args.quick else "scale", args.out)
    print(f"wrote {out}")
    return payload


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
