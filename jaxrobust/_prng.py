"""Random keys and draws, one scheme for the whole package.

Named streams: a job derives every random stage from `config.seed` through `stream`
(the training task, the test task, the sweep, the edits, attribution drift), so no
module hard-codes stream numbers. Per-item keys: `item_keys` gives image `i` at step
`s` the key `fold_in(fold_in(base, i), s)`, so a result never depends on how the
images were chunked or split over devices.

`normal` and `uniform` draw flat and reshape, compiled apart (`jaxrobust._fusion`):
XLA's CPU loops vectorise along the output's minor axis, and an image-shaped draw
`(..., 3)` or `(..., 1)` has one too short for that. JAX's partitionable Threefry
numbers values by their flat position, so the flat draw, reshaped, is bit-identical to
the shaped one (tested). `minval` and `maxval` may be traced.

A normal draw is JAX's own composition in two compiled loops: the uniforms
(`normal_uniforms`, the Threefry hash) apart from `sqrt(2) * erf_inv(u)` (`normal_of`,
which a kernel fuses with its own arithmetic). In one loop the integer hash and the
inverse error function ran ~17 % slower on CPU than the two apart
(docs/architecture.md); the values are `jax.random.normal`'s, bit for bit (tested
against stock JAX).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrobust._fusion import separately

#: The random streams of a job, folded into `jax.random.key(seed)`. The numbers are
#: part of every result's identity: changing one changes every result of that stage.
STREAMS = {"task_train": 1, "task_test": 2, "sweep": 3, "edits": 4, "drift": 5,
           "attribute": 6, "render": 7}


def stream(seed: int, name: str) -> jax.Array:
    """The key of stage `name` (a key of `STREAMS`) of a job seeded with `seed`."""
    return jax.random.fold_in(jax.random.key(seed), STREAMS[name])


def item_keys(base: jax.Array, indices: jax.Array, step) -> jax.Array:
    """`fold_in(fold_in(base, i), step)` for every `i` in `indices (B,)`: `(B,)` keys."""
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, i), step))(indices)


def normal_uniforms(key, size: int, dtype=jnp.float32) -> jax.Array:
    """The `(size,)` uniforms behind `jax.random.normal(key, (size,), dtype)` (on
    `(nextafter(-1, 0), 1)`, as JAX draws them), compiled apart: `normal_of` of them is
    that normal draw, bit for bit."""
    dtype = jnp.dtype(dtype)
    low = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
    return uniform(key, (size,), dtype, low, 1.0)


def normal_of(u: jax.Array) -> jax.Array:
    """Standard normal values from `normal_uniforms`: `sqrt(2) * erf_inv(u)`, as
    `jax.random.normal` computes them. Elementwise, for a kernel to fuse into its own
    loop."""
    return lax.mul(np.array(np.sqrt(2), u.dtype), lax.erf_inv(u))


def normal(key, shape, dtype=jnp.float32):
    """`jax.random.normal(key, shape, dtype)`, drawn flat (`normal_uniforms`, then
    `normal_of` compiled apart) and reshaped; the same values, bit for bit."""
    size = math.prod(shape)
    return separately(normal_of, normal_uniforms(key, size, dtype)).reshape(shape)


def uniform(key, shape, dtype=jnp.float32, minval=0.0, maxval=1.0):
    """`jax.random.uniform(key, shape, dtype, minval, maxval)`, drawn flat and reshaped."""
    size = math.prod(shape)
    return separately(lambda k: jax.random.uniform(k, (size,), dtype, minval, maxval),
                      key).reshape(shape)
