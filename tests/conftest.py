"""Shared fixtures. Tests draw fresh random inputs and compare with the references."""

import os
import zlib

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng(request):
    # A generator per test, seeded from the test's name (stable across runs, so that a
    # failure reproduces) and JAXROBUST_TEST_SEED (set it to draw other inputs).
    extra = int(os.environ.get("JAXROBUST_TEST_SEED", "0"))
    return np.random.default_rng([zlib.crc32(request.node.nodeid.encode()), extra])


def random_image(rng, shape, *, eight_bit):
    """A float32 image in [0, 1]; 8-bit-valued (k / 255) or arbitrary floats."""
    if eight_bit:
        return (rng.integers(0, 256, shape) / 255.0).astype(np.float32)
    return rng.random(shape, dtype=np.float32)
