"""Timing and reporting helpers shared by the benchmarks.

Run a benchmark from the repository root: `python -m benchmarks.kernels` (or
`python benchmarks/kernels.py`). It times the set-up a library user gets: JAX's own
devices and no process-wide switch. `--cpu-cores` times the tuned set-up the `jaxrobust`
command line runs in: one XLA CPU device per core, and JAX's unrolled Threefry lowering
(`jaxrobust.cpu.enable_fast_random()`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from collections.abc import Callable

import jax
import numpy as np

#: The repository root: benchmarks run from here (`python -m benchmarks.NAME`).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def device_info() -> dict:
    """What ran the benchmark: JAX device, CPU model, core count, the process-wide
    Threefry switch, versions."""
    from jaxrobust.cpu import fast_random_enabled

    dev = jax.devices()[0]
    cpu = platform.processor() or ""
    more = {}  # the family / model and vector extensions tell apart machines of one name
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        match = re.search(r"model name\s*:\s*(.+)", text)
        cpu = match.group(1).strip() if match else cpu
        for key, pattern in (("cpu_family", r"cpu family\s*:\s*(\d+)"),
                             ("cpu_model", r"\nmodel\s*:\s*(\d+)")):
            match = re.search(pattern, text)
            if match:
                more[key] = int(match.group(1))
        match = re.search(r"flags\s*:\s*(.+)", text)
        if match:
            flags = set(match.group(1).split())
            more["cpu_vector"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16")
                                  if f in flags]
    except OSError:
        pass
    return {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "cpu": cpu,
        **more,
        "cpu_cores": os.cpu_count(),
        "unrolled_threefry_lowering": fast_random_enabled(),  # cpu.enable_fast_random
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else jax.__version__,
        "python": platform.python_version(),
    }


def device_slug(info: dict) -> str:
    """A file-name-safe device name: `cpu-2core` or `gpu-nvidia-h100-80gb-hbm3`."""
    if info["platform"] == "cpu":
        return f"cpu-{info['cpu_cores']}core"
    kind = re.sub(r"[^a-z0-9]+", "-", info["device_kind"].lower()).strip("-")
    return f"{info['platform']}-{kind}"


def time_call(fn: Callable[[], object], *, repeats: int = 3, min_time: float = 0.0) -> float:
    """Median wall time of `fn()` over `repeats` runs (after the caller warmed it up).

    `fn` must block until its result is ready (call `jax.block_until_ready`).
    """
    times = []
    start_all = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start_all < min_time:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interleaved(reference: Callable[[], object], ours: Callable[[], object], *,
                repeats: int = 5, min_time: float = 3.0,
                budget_s: float = 2.0) -> tuple[float, float]:
    """Median seconds of a reference pass and of our pass, timed alternately.

    On a shared machine the speed of both sides drifts by several times within
    minutes; alternating the passes makes a ratio compare the same conditions. Runs
    at least `repeats` rounds and `min_time` seconds; a reference pass over
    `budget_s` is timed once (and ours `repeats` times right after it). `ours` must
    block until its result is ready, and be warmed up by the caller.
    """
    refs, mine = [], []
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        reference()
        refs.append(time.perf_counter() - t)
        if refs[0] > budget_s:
            return refs[0], time_call(ours, repeats=repeats)
        t = time.perf_counter()
        ours()
        mine.append(time.perf_counter() - t)
        if len(refs) >= repeats and time.perf_counter() - start >= min_time:
            return float(np.median(refs)), float(np.median(mine))


def write_json(path: str, payload: dict) -> None:
    """Writes `payload` to `path` atomically."""
    from jaxrobust import _io

    _io.write_text(path, json.dumps(payload, indent=2) + "\n")


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Prints rows as an aligned table; columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append([
            (fmt.format(row[k]) if row.get(k) is not None else "-") for k, _, fmt in columns
        ])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for i, line in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for c, w in zip(line, widths, strict=True)))


SETUP_DEFAULT = ("default: JAX's own devices, no flags and no process-wide switch (what a "
                 "library user gets in a fresh Python)")
SETUP_TUNED = ("tuned: one XLA CPU device per core (jaxrobust.cpu.use_cpu_cores) and "
               "jaxrobust.cpu.enable_fast_random(), as the command line runs")


def bench_parser(doc: str, name: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes: `--out`, `--cpu-cores`."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}",
                                     description=doc.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", help="results JSON path (default: "
                        "benchmarks/results/<device>-<benchmark>.json)")
    parser.add_argument("--cpu-cores", action="store_true",
                        help="time the tuned set-up: one XLA device per CPU core "
                        "(jaxrobust.cpu.use_cpu_cores) instead of the default set-up a user gets")
    return parser


def parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """Parses `argv`; with `--cpu-cores`, makes each CPU core a JAX device (before JAX
    starts) and turns on the unrolled Threefry lowering, as the command line does.
    `args.setup` names the set-up timed (`SETUP_DEFAULT` or `SETUP_TUNED`)."""
    from jaxrobust.cpu import enable_fast_random, use_cpu_cores

    args = parser.parse_args(argv)
    args.setup = SETUP_DEFAULT
    if args.cpu_cores:
        if not use_cpu_cores():
            parser.error("--cpu-cores must be given before JAX starts (run the benchmark in "
                         "a fresh process).")
        args.setup = SETUP_TUNED
        enable_fast_random()
    return args


def geometric_mean(values) -> float:
    """The geometric mean of positive ratios (how per-item speed-ups are summarised)."""
    values = np.asarray([v for v in values if v is not None], np.float64)
    return float(np.exp(np.mean(np.log(values)))) if values.size else float("nan")


def save(payload: dict, name: str, out: str | None = None) -> str:
    """Writes `payload` to `out` or `benchmarks/results/<device>-<name>.json`; returns the path."""
    out = out or os.path.join("benchmarks", "results",
                              f"{device_slug(payload['device'])}-{name}.json")
    write_json(out, payload)
    return out
