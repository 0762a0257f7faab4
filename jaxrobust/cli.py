"""The `jaxrobust` command: parses arguments and calls the library."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _default_out() -> str:
    return os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


def _cmd_run(args) -> None:
    from jaxrobust.pipeline import run_kernel_demo

    run_kernel_demo(args.out or _default_out(), seed=args.seed)


def _cmd_corruptions(args) -> None:
    from jaxrobust import corruptions

    for name in corruptions.names():
        c = corruptions.get(name)
        levels = corruptions.seed_levels(name)
        print(f"{name:15s} aliases: {', '.join(c.aliases):8s} class: {c.label}")
        print(f"    level: {c.level_meaning}")
        print(f"    study's schedule: {len(levels)} steps, {levels[0]:g} .. {levels[-1]:g}")


def _cmd_bench(args) -> None:
    from jaxrobust.bench import kernels

    if args.suite == "kernels":
        kernels.main(["--out", args.out] if args.out else [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxrobust",
        description="Image-corruption robustness sweeps and attribution studies in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the main job on the built-in data")
    run.add_argument("--out", help="output folder (default: runs/<timestamp>)")
    run.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    run.set_defaults(fn=_cmd_run)

    lst = sub.add_parser("corruptions", help="list the corruptions and their levels")
    lst.set_defaults(fn=_cmd_corruptions)

    bench = sub.add_parser("bench", help="speed against the reference libraries")
    bench.add_argument("suite", choices=["kernels"])
    bench.add_argument("--out", help="results JSON path (default benchmarks/results/...)")
    bench.set_defaults(fn=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError) as e:
        print(f"jaxrobust: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxrobust: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
