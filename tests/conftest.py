"""Shared fixtures. Tests draw fresh random inputs and compare with the references."""

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng(request):
    # A fresh generator per test, seeded from the test's name so that a failure
    # reproduces, while different tests see different inputs.
    seed = abs(hash(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)


def random_image(rng, shape, *, eight_bit):
    """A float32 image in [0, 1]; 8-bit-valued (k / 255) or arbitrary floats."""
    if eight_bit:
        return (rng.integers(0, 256, shape) / 255.0).astype(np.float32)
    return rng.random(shape, dtype=np.float32)
