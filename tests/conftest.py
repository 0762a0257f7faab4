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
# Tests run small shapes, where LLVM's optimisation of XLA's CPU code costs far more than
# it saves: compile at -O0. From an empty cache the suite took 13.1-14.5 min at the
# default level, 10.8-11.7 at -O0. The level only changes LLVM's code generation (XLA's
# fusion and layout decisions, and the convolution libraries, are the same): integer
# kernels (median, JPEG, pixelate) give the same bits, float kernels may differ in the
# last bit (contracted multiply-adds), within every test's tolerance against its
# reference. The device-count tests (test_sharding, test_resume) run their
# subprocesses at the default level, as users run (`xla_flags(..., optimised=True)`).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

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
    flags kept (`optimised`: all but its -O0, so that XLA compiles as a user's run)."""
    drop = ["--xla_force_host_platform_device_count"]
    if optimised:
        drop.append("--xla_backend_optimization_level")
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not any(f.startswith(d) for d in drop)]
    return " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])


def random_image(rng, shape, *, eight_bit):
    """A float32 image in [0, 1]; 8-bit-valued (k / 255) or arbitrary floats."""
    if eight_bit:
        return (rng.integers(0, 256, shape) / 255.0).astype(np.float32)
    return rng.random(shape, dtype=np.float32)
