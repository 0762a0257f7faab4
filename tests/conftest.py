"""Shared fixtures. Tests draw fresh random inputs and compare with the references."""

import os
import sys
import tempfile
import zlib

# Many tests build the same kernels and models under new closures, and XLA's CPU
# compiler dominates the suite's time: share compiled programs through JAX's persistent
# cache (between the xdist workers, the subprocesses some tests start, and reruns).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "jaxrobust-tests-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# Keras 3 on JAX, without TensorFlow, for every test file whatever runs first (a file
# that imports keras before another sets this would skip its Keras tests)
os.environ.setdefault("KERAS_BACKEND", "jax")
# Tests run small shapes, where XLA's CPU code generation costs more than the code
# saves: they compile at LLVM's -O0 and with XLA's older loop emitters
# (`xla_cpu_use_fusion_emitters=false`). From an empty cache, on one 2-core machine on
# one day, the suite took 13.2 min at -O0 alone and 9.5 min with both; the default
# emitters run some kernels up to ~3x faster, so a warm run gains nothing. Only the
# machine code differs: integer kernels (median, JPEG, pixelate) give the same bits;
# float results may differ in the last bits, within every test's tolerance against its
# reference, and two programs around the same values (a uint8 source converted on the
# device, and the same images as floats) may round apart. The tests that compare bits
# across programs as users get them (device counts, uint8 against float sources:
# test_sharding, test_resume) start their subprocesses with `xla_flags(...,
# optimised=True)`, which compiles as a user's run does.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _name(flag: str) -> str:
    return flag.split("=")[0]


_flags = os.environ.get("XLA_FLAGS", "").split()
_given = {_name(f) for f in _flags}  # a flag the caller set is kept as set
os.environ["XLA_FLAGS"] = " ".join(
    _flags + [f for f in TEST_XLA_FLAGS if _name(f) not in _given])

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_numpy_rank_promotion", "raise")

import jaxrobust.cpu  # noqa: E402

jaxrobust.cpu.enable_fast_random()  # as the command line runs (values are the same)

# The benchmarks' reference helpers (`benchmarks.reference`, the Captum twin) live in
# the source tree, not in the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def rng(request):
    # A generator per test, seeded from the test's name (stable across runs, so that a
    # failure reproduces) and JAXROBUST_TEST_SEED (set it to draw other inputs).
    extra = int(os.environ.get("JAXROBUST_TEST_SEED", "0"))
    return np.random.default_rng([zlib.crc32(request.node.nodeid.encode()), extra])


def xla_flags(devices: int, *, optimised: bool = False) -> str:
    """`XLA_FLAGS` for a test's subprocess with `devices` CPU devices, the suite's own
    flags kept (`optimised`: all but `TEST_XLA_FLAGS`, so that XLA compiles as a user's
    run)."""
    drop = {"--xla_force_host_platform_device_count"}
    if optimised:
        drop |= {_name(f) for f in TEST_XLA_FLAGS}
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if _name(f) not in drop]
    return " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])


def random_image(rng, shape, *, eight_bit):
    """A float32 image in [0, 1]; 8-bit-valued (k / 255) or arbitrary floats."""
    if eight_bit:
        return (rng.integers(0, 256, shape) / 255.0).astype(np.float32)
    return rng.random(shape, dtype=np.float32)
