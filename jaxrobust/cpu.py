"""Opt-in speed-ups for XLA's CPU backend. Nothing here runs on import.

`enable_fast_random()` lowers JAX's default PRNG hash (Threefry-2x32) on CPU with the
rule JAX itself uses on GPU and TPU: 20 unrolled rounds of elementwise integer ops,
which XLA fuses into one vectorised loop, instead of a `fori_loop` over five 4-round
blocks (five passes over the counters in memory). The hash is the same function, so
every key, split and sample is bit-identical to stock JAX (tested against a fresh
interpreter); only the compiled programs change, and they run faster
(docs/architecture.md, "XLA CPU notes"). It changes the lowering for the whole
process, which is why a library import does not do it: the `jaxrobust` command line
turns it on, and a user may call it at the start of a script. jaxrobust's own bulk
draws (the noise kernels, `_prng.uniform` / `normal`) do not need it: they hash with
the unrolled rounds in every process (`jaxrobust._prng`); it still speeds up the other
`jax.random` calls (model initialisation, key splits, small draws).

`use_cpu_cores()` asks XLA for one CPU device per core before JAX starts; the command
line does this unless told `--one-device`.
"""

from __future__ import annotations

import os

import jax

_FAST_RANDOM = False


def enable_fast_random() -> bool:
    """Lowers `threefry2x32` on CPU with JAX's unrolled (GPU/TPU) rule, from now on.

    Programs compiled before the call keep the lowering they had. Values never change.
    Set `JAXROBUST_ROLLED_THREEFRY=1` to make this a no-op.

    Returns:
        Whether the unrolled rule is in place (False when turned off by the variable,
        or when a JAX release moved the names it uses).
    """
    global _FAST_RANDOM
    if _FAST_RANDOM:
        return True
    if os.environ.get("JAXROBUST_ROLLED_THREEFRY", "") not in ("", "0"):
        return False
    from jax.extend.random import threefry2x32_p
    from jax.interpreters import mlir

    try:  # the rule itself has no public name
        from jax._src.random.threefry2x32 import _threefry2x32_lowering_rule as rule
    except ImportError:  # a JAX release moved it: keep JAX's CPU lowering
        return False
    mlir.register_lowering(threefry2x32_p, rule, platform="cpu")
    _FAST_RANDOM = True
    return True


def fast_random_enabled() -> bool:
    """Whether `enable_fast_random()` is in effect in this process."""
    return _FAST_RANDOM


def use_cpu_cores(count: int | None = None) -> bool:
    """Asks XLA for one CPU device per core (or `count`), if JAX has not started yet.

    Leaves an explicit `--xla_force_host_platform_device_count` in `XLA_FLAGS` alone.
    Has no effect once a JAX backend is initialised; on a GPU or TPU host the CPU
    devices are split but the accelerator stays the default.

    Returns:
        Whether the split is in place.
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return True
    try:
        jax.config.update("jax_num_cpu_devices", count or os.cpu_count() or 1)
    except RuntimeError:  # a backend has started: the topology is fixed
        return False
    return True
