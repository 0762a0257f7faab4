"""The `jaxrobust` command: parses arguments and calls the library."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _default_out() -> str:
    return os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


DEFAULT_CONFIG = "demo"
#: `corruptions.tables.BENCHMARKS`, spelled out so that `--help` imports no JAX
#: (tests/test_tables.py checks they agree).
BENCHMARKS = ("imagenet", "cifar10", "tinyimagenet", "imagenet64")


def _config(args):
    from jaxrobust import config

    overrides = list(args.set or [])
    if getattr(args, "devices", None) is not None:
        overrides.append(f"sweep.devices={args.devices}")
    if getattr(args, "corruptions", None):
        overrides.append(f"task.corruptions=[{','.join(args.corruptions)}]")
    if getattr(args, "seed", None) is not None:
        overrides.append(f"seed={args.seed}")
    if getattr(args, "table", None) is not None:
        overrides.append(f"sweep.table={args.table}")
    cfg = config.load(config.resolve(args.config or DEFAULT_CONFIG), overrides)
    # names checked before any data is generated or trained; the configured models'
    # needs only where they are built
    config.validate(cfg, trains=args.command in ("run", "train", "counterfactual"))
    return cfg


def _log(args):
    """Where the library's log lines go: stdout, or nowhere with --quiet."""
    return (lambda message: None) if args.quiet else print


def _cmd_run(args) -> None:
    from jaxrobust.studies import corruption

    corruption.run(_config(args), args.out or _default_out(), log=_log(args),
                   restart=args.restart)


def _cmd_demo(args) -> None:
    from jaxrobust.studies import kernels

    kernels.run_kernel_demo(args.out or _default_out(), seed=args.seed, log=_log(args))


def _cmd_train(args) -> None:
    from jaxrobust.studies import corruption

    corruption.train_only(_config(args), args.out or _default_out(), log=_log(args))


def _cmd_sweep(args) -> None:
    from jaxrobust import sharding
    from jaxrobust.studies import corruption

    if sharding.initialize_processes(args.coordinator, args.num_processes, args.process_id,
                                     timeout=args.coordinator_timeout):
        import jax

        if args.out is None:
            raise ValueError("several processes need one --out folder that all of them "
                             "can write (e.g. on a shared file system).")
        if jax.process_index() != 0:  # process 0 speaks and writes for all
            args.quiet = True
            from jaxrobust import _progress

            _progress.set_default(False)
    kw = {"class_names_of_keras": tuple(args.class_names)} if args.class_names else {}
    corruption.sweep_checkpoints(_config(args), args.checkpoint or [],
                                 args.out or _default_out(), keras_models=args.keras_model or [],
                                 data=args.data, prerendered=args.prerendered,
                                 prerendered_names=args.corruptions, log=_log(args), **kw)


def _cmd_render(args) -> None:
    from jaxrobust import corruptions
    from jaxrobust.data import stream
    from jaxrobust.studies import render

    table = args.table
    corruptions.tables.check(table)
    size = args.image_size or corruptions.tables.IMAGE_SIZE[table]
    source, class_names = stream.open_source(args.data, image_size=size, channels=3)
    names = args.corruptions or [*corruptions.IMAGENET_C, *corruptions.IMAGENET_C_VALIDATION]
    file_names = None
    if isinstance(source, stream.FolderSource):
        file_names = [os.path.splitext(os.path.basename(p))[0] for p in source.paths]
    render.render(source, args.out or _default_out(), layout=args.layout, names=names,
                  table=table, seed=0 if args.seed is None else args.seed,
                  class_names=class_names, file_names=file_names, log=_log(args))


def _cmd_counterfactual(args) -> None:
    from jaxrobust.studies import counterfactual

    if args.config is None:
        args.config = "digits_ig"
    counterfactual.run(_config(args), args.out or _default_out(), log=_log(args),
                       restart=args.restart)


def _cmd_corruptions(args) -> None:
    from jaxrobust import corruptions

    if args.gallery:
        from jaxrobust.studies.kernels import corruption_gallery

        out = corruption_gallery(args.gallery, args.out or "gallery.png",
                                 names=args.corruptions, severities=args.severities,
                                 size=args.size, seed=args.seed)
        _log(args)(f"wrote {out}")
        return
    bench = args.table
    side = corruptions.tables.IMAGE_SIZE[bench]
    for name in corruptions.names():
        if bench != "imagenet" and not corruptions.in_table(name, bench):
            continue
        c = corruptions.get(name, table=bench)
        levels = corruptions.seed_levels(  # the study's schedules at its own 174 px
            name, table=bench, **({} if bench == "imagenet" else {"image_size": side}))
        aliases = f" (aliases: {', '.join(c.aliases)})" if c.aliases else ""
        print(f"{name}{aliases}  [{c.family}; class {c.label!r}; {c.source}]")
        print(f"    level: {c.level_meaning}; valid {c.min_level:g} .. "
              f"{c.max_level(side, side):g} at {side} px")
        if c.severities is not None:
            table = ", ".join(f"{v:.4g}" for v in c.severities)
            print(f"    severities 1-5 at {side} px: {table}")
        if c.seed_schedule and c.table == "imagenet":
            study = corruptions.seed_levels(name, protocol="study")
            print(f"    continuous protocol: {len(levels)} steps, {levels[0]:g} .. "
                  f"{levels[-1]:g}; study protocol: {len(study)} steps, {float(study[0])!r} .. "
                  f"{float(study[-1])!r}")
        else:
            print(f"    default sweep: {len(levels)} steps, {levels[0]:g} .. {levels[-1]:g}")


def _cmd_bench(args) -> None:
    from jaxrobust.studies import timing

    if not args.checkpoint:
        raise ValueError("bench needs --checkpoint MODEL_DIR, e.g. runs/demo/models/vgg16.")
    timing.run(_config(args), args.checkpoint, steps=args.steps, images=args.images,
               corruption=args.corruption, out=args.json, log=_log(args))


def _cmd_configs(args) -> None:
    from jaxrobust import config

    found = config.shipped()
    if args.name:
        with open(config.resolve(args.name)) as f:
            print(f.read(), end="")
        return
    width = max(map(len, found))
    for name, path in found.items():
        with open(path) as f:
            first = f.readline().lstrip("# ").strip()
        print(f"{name:{width}s}  {path}")
        print(f"{'':{width}s}  {first}")


def _cmd_attribute(args) -> None:
    from jaxrobust.studies import attribute

    if not args.checkpoint:
        raise ValueError("attribute needs --checkpoint MODEL_DIR, e.g. runs/demo/models/vgg16.")
    attribute.run(_config(args), args.checkpoint, args.out or _default_out(),
                  method=args.method, steps=args.steps, n=args.n, log=_log(args))


def _version() -> str:
    from jaxrobust import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    # Options every command takes, before or after the command's name. In the
    # sub-commands their default is SUPPRESS, so that `jaxrobust -q run` keeps -q.
    def process_options(p, default):
        p.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="print nothing but errors (no log lines, no progress bars)")
        p.add_argument("--one-device", action="store_true", default=default,
                       help="run on JAX's single default CPU device (whose batched calls "
                       "still run one part per core from a thread pool; "
                       "JAXROBUST_CPU_THREADS=1 keeps them to one) instead of one CPU "
                       "device per core (the default); results are the same either way")
        p.add_argument("--no-compile-cache", action="store_true", default=default,
                       help="compile every XLA program afresh instead of keeping them in "
                       "$XDG_CACHE_HOME/jaxrobust/xla (default ~/.cache/jaxrobust/xla, "
                       "or JAX_COMPILATION_CACHE_DIR when set), where a rerun finds the "
                       "programs an earlier run compiled; results are the same either way")

    parser = argparse.ArgumentParser(
        prog="jaxrobust",
        description="Image-corruption robustness sweeps and attribution studies in JAX.",
        epilog="Shipped configs: `jaxrobust configs`. Help on a command: "
               "`jaxrobust COMMAND -h`.")
    parser.add_argument("--version", action="version", version=f"jaxrobust {_version()}")
    process_options(parser, False)
    common = argparse.ArgumentParser(add_help=False)
    process_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, **kwargs):
        return sub.add_parser(name, parents=[common], **kwargs)

    def with_config(p, *, default=DEFAULT_CONFIG, seeded=True):
        p.add_argument("config", nargs="?",
                       help=f"a YAML config file, or a shipped config's name (default: "
                       f"{default}; `jaxrobust configs` lists them)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.epochs=3 "
                       "(repeatable)")
        p.add_argument("--out", help="output folder (default: runs/<timestamp>)")
        if seeded:
            p.add_argument("--seed", type=int,
                           help="PRNG seed of data, splits, training and corruptions "
                           "(default: the config's `seed`)")
        return p

    def devices_option(p):
        p.add_argument("--devices", type=int, help="sweep on this many local devices "
                       "(default: all)")

    run = with_config(command(
        "run", help="the main job: train, sweep under the study's protocol, report"))
    devices_option(run)
    run.add_argument("--corruptions", nargs="+", metavar="NAME",
                     help="corruptions to train on and sweep (any registered name; "
                     "default: the config's task.corruptions)")
    def restart_option(p):
        p.add_argument("--restart", action="store_true",
                       help="remove the --out folder's earlier outputs and start afresh (a "
                       "rerun with another config is refused otherwise)")

    restart_option(run)
    run.set_defaults(fn=_cmd_run)

    trn = with_config(command("train", help="train the configured models"))
    trn.set_defaults(fn=_cmd_train)

    swp = with_config(command("sweep", help="sweep trained checkpoints"))
    swp.add_argument("--checkpoint", action="append", metavar="MODEL_DIR",
                     help="a trained model folder (repeat for several)")
    swp.add_argument("--keras-model", action="append", metavar="FILE",
                     help="a saved Keras classifier (Sequential or functional; .keras or "
                     "full-model .h5; repeat for several), swept without training")
    swp.add_argument("--data", metavar="SOURCE",
                     help="sweep every image of this source, read lazily a chunk at a time, "
                     "instead of the config's test split: folder:PATH, "
                     "npy:IMAGES.npy[,LABELS.npy] or tfds:NAME[/SPLIT]")
    swp.add_argument("--coordinator", metavar="HOST:PORT",
                     help="several processes (jax.distributed): process 0's address; "
                     "'auto' for Slurm / Open MPI detection (default: "
                     "$JAX_COORDINATOR_ADDRESS, else one process)")
    swp.add_argument("--num-processes", type=int, metavar="N",
                     help="with --coordinator: the process count (or $JAX_NUM_PROCESSES)")
    swp.add_argument("--process-id", type=int, metavar="I",
                     help="with --coordinator: this process, 0..N-1 (or $JAX_PROCESS_ID)")
    swp.add_argument("--coordinator-timeout", type=float, default=300.0, metavar="S",
                     help="seconds to wait for the coordinator (default 300)")
    swp.add_argument("--prerendered", metavar="SET",
                     help="also evaluate on a pre-rendered benchmark, cifar10c:PATH "
                     "(<corruption>.npy + labels.npy) or imagenetc:PATH "
                     "(<corruption>/<severity>/<class>/*.JPEG), beside the same corruptions "
                     "on the fly at severities 1-5 (needs --set sweep.target=labels)")
    swp.add_argument("--table", choices=BENCHMARKS,
                     help="the benchmark whose parameters the corruptions follow (default: "
                     "the config's sweep.table, imagenet)")
    swp.add_argument("--class-names", nargs="+", metavar="NAME",
                     help="the Keras models' classes in output order (default: the "
                     "study's original scale_up median_blur gaussian_noise)")
    devices_option(swp)
    swp.add_argument("--corruptions", nargs="+", metavar="NAME",
                     help="corruptions to sweep (any registered name the checkpoints "
                     "were trained on; default: the config's task.corruptions)")
    swp.set_defaults(fn=_cmd_sweep)

    rnd = command("render", help="write a corrupted copy of a data source in a pre-rendered "
                  "benchmark's layout (CIFAR-10-C .npy or ImageNet-C JPEG tree)")
    rnd.add_argument("--data", required=True, metavar="SOURCE",
                     help="the clean labelled images: folder:PATH, npy:IMAGES.npy,LABELS.npy "
                     "or tfds:NAME[/SPLIT]")
    rnd.add_argument("--layout", choices=["cifar10c", "imagenetc"], default="cifar10c",
                     help="cifar10c: <corruption>.npy + labels.npy; imagenetc: "
                     "<corruption>/<severity>/<class>/*.JPEG (default cifar10c)")
    rnd.add_argument("--table", choices=BENCHMARKS,
                     default="cifar10", help="the benchmark's parameters (default cifar10)")
    rnd.add_argument("--corruptions", nargs="+", metavar="NAME",
                     help="corruptions to render (default: ImageNet-C's 15 and its 4 "
                     "validation corruptions)")
    rnd.add_argument("--image-size", type=int, metavar="PX",
                     help="side folder: / tfds: images are resized to (default: the "
                     "table's, 32 for cifar10, 64 for tinyimagenet / imagenet64, 224)")
    rnd.add_argument("--out", help="output folder, absent or empty (default: runs/<timestamp>)")
    rnd.add_argument("--seed", type=int, help="PRNG seed (default 0): the same seed writes "
                     "the same files")
    rnd.set_defaults(fn=_cmd_render)

    att = with_config(command("attribute", help="attributions from a checkpoint"))
    att.add_argument("--checkpoint", metavar="MODEL_DIR", help="a trained model folder")
    att.add_argument("--method", choices=["saliency", "ig", "smoothgrad"], default="ig",
                     help="ig: Integrated Gradients (black baseline, Gauss-Legendre); "
                     "saliency: |gradient| of the predicted logit; smoothgrad: the same "
                     "averaged over 50 noisy copies (seeded by --seed) (default: ig)")
    att.add_argument("--steps", type=int, default=50, help="IG path steps (default 50)")
    att.add_argument("--n", type=int, default=8, help="test images to explain (default 8)")
    att.set_defaults(fn=_cmd_attribute)

    cf = with_config(command(
        "counterfactual", help="edit misclassified images until the model is right "
        "(default config: digits_ig)"), default="digits_ig")
    restart_option(cf)
    cf.set_defaults(fn=_cmd_counterfactual)

    demo = command("kernels-demo", help="the kernel protocol on a bundled photo")
    demo.add_argument("--out", help="output folder (default: runs/<timestamp>)")
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    demo.set_defaults(fn=_cmd_demo)

    lst = command("corruptions", help="list the corruptions and their levels, or "
                  "draw a gallery (--gallery IMAGE)")
    lst.add_argument("--gallery", metavar="IMAGE",
                     help="write a PNG grid of IMAGE (a file, or 'sample') under every "
                     "corruption at every severity")
    lst.add_argument("--table", choices=BENCHMARKS,
                     default="imagenet", help="list this benchmark's corruptions and "
                     "severities (default imagenet)")
    lst.add_argument("--out", help="gallery PNG path (default gallery.png)")
    lst.add_argument("--corruptions", nargs="+", metavar="NAME",
                     help="gallery rows (default: every corruption with severities)")
    lst.add_argument("--severities", nargs="+", type=float, default=[1, 2, 3, 4, 5],
                     help="gallery columns, ImageNet-C severities in [0, 5] (default 1..5)")
    lst.add_argument("--size", type=int, default=224, help="gallery image side (default 224)")
    lst.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    lst.set_defaults(fn=_cmd_corruptions)

    cfgs = command("configs", help="list the shipped configs and their paths, or print one")
    cfgs.add_argument("name", nargs="?", help="print this config's YAML (copy it to start "
                      "your own)")
    cfgs.set_defaults(fn=_cmd_configs)

    bench = with_config(command(
        "bench", help="time attribution and a sweep on a trained checkpoint",
        description="Times Integrated Gradients per image at each --steps (against its "
        "forward+backward floor) and one corruption's sweep (image-levels per second) on "
        "a checkpoint and the config's test images. The comparisons with reference "
        "libraries live in the source tree's benchmarks/."))
    bench.add_argument("--checkpoint", metavar="MODEL_DIR", help="a trained model folder")
    bench.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64],
                       help="IG path steps to time (default 16 32 64)")
    bench.add_argument("--images", type=int, default=16,
                       help="test images per call (default 16)")
    bench.add_argument("--corruption", metavar="NAME",
                       help="the corruption swept (default: the config's first)")
    bench.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    bench.set_defaults(fn=_cmd_bench)
    return parser


def _quiet_libraries() -> None:
    """Silences library chatter that is not the user's business: absl's checkpoint
    waits, XLA's C++ log lines (the "Very slow compile?" banner) and JAX's warnings
    about its own internals. Errors still raise."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    for name in ("absl", "orbax", "jax._src.xla_bridge", "jax._src.compiler"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"orbax\..*")


#: Compiled programs kept at most (JAX drops the least recently used beyond it).
COMPILE_CACHE_BYTES = 2 * 2**30


def _use_compile_cache() -> None:
    """Keeps compiled XLA programs on disk between runs (JAX's persistent compilation
    cache), so a rerun, or another command on the same shapes, skips their compiles.
    Programs that compile in under 0.2 s are not kept. JAX_COMPILATION_CACHE_DIR, when
    set, is used as is; without a writable cache folder, programs compile as usual."""
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user's own (JAX_COMPILATION_CACHE_DIR)
        return
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(root, "jaxrobust", "xla")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return
    if not os.access(path, os.W_OK):
        return
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)


def _os_message(e: OSError) -> str:
    """One line for an operating-system error: what, where, and what to do."""
    import errno

    where = f" ({e.filename})" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the disk is full{where}; free some space or pass another --out (finished "
                "work is kept: rerun the same command to continue).")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied{where}; pass a writable --out."
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{e.strerror or e}{where}; pass a folder path as --out."
    return f"{e.strerror or e}{where}."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    from jaxrobust import cpu

    if not args.one_device:
        cpu.use_cpu_cores()  # before JAX starts; no effect on a GPU/TPU or once it has
    cpu.enable_fast_random()  # the command line owns its process
    if not args.no_compile_cache:
        _use_compile_cache()
    from jaxrobust import _progress

    before = _progress.enabled()
    _progress.set_default(not args.quiet)
    try:
        return _dispatch(args)
    finally:
        _progress.set_default(before)


def _dispatch(args) -> int:
    out = getattr(args, "out", None)
    existed = out is None or os.path.exists(out)
    try:
        args.fn(args)
    except ValueError as e:
        message = str(e)
    except OSError as e:
        message = str(e) if e.errno is None else _os_message(e)  # ours carry no errno
    except KeyboardInterrupt:
        print("jaxrobust: interrupted", file=sys.stderr)
        return 130
    else:
        return 0
    if not existed and os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)  # a folder this command made and never wrote to
    print(f"jaxrobust: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
