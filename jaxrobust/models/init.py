"""Flax's default kernel initializer, with a few compiled programs per model.

`lecun_normal()` returns the same values as `flax.nnx.initializers.lecun_normal()`
(Flax's default for `nnx.Conv` and `nnx.Linear` kernels), bit for bit (tested). Flax's
draws `jax.random.truncated_normal(key, -2, 2, shape)` eagerly, which compiles one
program per distinct kernel shape: about 60 for Xception. With JAX's stock CPU
Threefry lowering (a rolled loop) a small multi-dimensional draw takes 0.5-7 s to
compile, so building a model took 10-20 s in a fresh process. Here the draw is flat,
in a power-of-two bucket of at least 4096 values: JAX's partitionable Threefry
numbers values by flat position, so the first `prod(shape)` values of a longer flat
draw, reshaped, are the shaped draw. A model needs one compiled draw per bucket (about
ten) and cheap slice-and-scale programs. Works eagerly and under `jit`/`eval_shape`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

#: The smallest flat draw: kernels up to this size share one compiled program.
MIN_BUCKET = 1 << 12

#: Standard deviation of a standard normal truncated to (-2, 2) (as in JAX's
#: `variance_scaling`).
_TRUNCATED_STD = .87962566103423978


@functools.partial(jax.jit, static_argnums=(1, 2))
def _draw(key, size: int, dtype):
    return jax.random.truncated_normal(key, -2, 2, (size,), dtype)


@functools.partial(jax.jit, static_argnums=(2,))
def _scaled(flat, stddev, shape: tuple[int, ...]):
    return flat[:math.prod(shape)].reshape(shape) * stddev


def lecun_normal():
    """Flax's `lecun_normal()`: a truncated normal (to +-2 standard deviations) with
    variance `1 / fan_in`, `fan_in = shape[-2] * prod(shape[:-2])` (input features
    times the receptive field; the last axis is the output features).

    Returns:
        `init(key, shape, dtype=float32) -> Array` of `shape`, equal to
        `flax.nnx.initializers.lecun_normal()(key, shape, dtype)`.

    Raises:
        ValueError: a shape with fewer than 2 axes or a non-float dtype.
    """

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(int(d) for d in shape)
        dtype = jnp.dtype(dtype)
        if len(shape) < 2 or not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"lecun_normal: a float kernel of at least 2 axes, got {dtype} "
                             f"{shape}.")
        fan_in = shape[-2] * math.prod(shape[:-2])
        # the same float32 operations as JAX's variance_scaling, so the same rounding
        stddev = jnp.sqrt(jnp.array(1.0 / fan_in, dtype)) / jnp.array(_TRUNCATED_STD, dtype)
        size = math.prod(shape)
        bucket = max(MIN_BUCKET, 1 << (size - 1).bit_length())
        return _scaled(_draw(key, bucket, dtype), stddev, shape)

    return init
