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
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

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


def normal(key, shape, dtype=jnp.float32):
    """`jax.random.normal(key, shape, dtype)`, drawn flat and reshaped."""
    size = math.prod(shape)
    return separately(lambda k: jax.random.normal(k, (size,), dtype), key).reshape(shape)


def uniform(key, shape, dtype=jnp.float32, minval=0.0, maxval=1.0):
    """`jax.random.uniform(key, shape, dtype, minval, maxval)`, drawn flat and reshaped."""
    size = math.prod(shape)
    return separately(lambda k: jax.random.uniform(k, (size,), dtype, minval, maxval),
                      key).reshape(shape)
