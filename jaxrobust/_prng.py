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

The hash of these draws is written out here (`threefry2x32`: the 20 rounds as plain
integer ops, the form JAX lowers to on GPU and TPU), so that XLA's CPU backend fuses it
into one vectorised loop in every process. JAX's own CPU lowering of the same hash is a
loop over five blocks of rounds with the counters in memory between them (~1.7x slower
for the sweep's noise draws); `cpu.enable_fast_random()` switches that lowering for a
whole process, which a library import must not do. Here only jaxrobust's own draws are
concerned, and their values stay JAX's: the counters and the bits-to-float step are
those of `jax.random.uniform` with a Threefry key and `jax_threefry_partitionable` on
(JAX's default), tested bit for bit against stock JAX. Any other set-up (another PRNG
implementation, the old non-partitionable scheme, a dtype other than float32) draws
through `jax.random.uniform` itself.
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
    """`jax.random.uniform(key, shape, dtype, minval, maxval)`, drawn flat (`uniform_flat`)
    and reshaped, compiled apart from the caller's loops."""
    size = math.prod(shape)
    return separately(lambda k: uniform_flat(k, size, dtype, minval, maxval),
                      key).reshape(shape)


def uniform_flat(key, size: int, dtype=jnp.float32, minval=0.0, maxval=1.0) -> jax.Array:
    """`jax.random.uniform(key, (size,), dtype, minval, maxval)`, bit for bit, with the
    hash as `threefry2x32`'s unrolled integer ops (see the module docstring); for a
    kernel that fuses the draw into its own flat loop. Falls back to
    `jax.random.uniform` outside the set-up it reproduces."""
    dtype = jnp.dtype(dtype)
    data = _threefry_key_data(key)
    if data is None or dtype != jnp.float32 or size >= 2**32:
        return jax.random.uniform(key, (size,), dtype, minval, maxval)
    # jax.random.uniform's steps: 32 random bits per value from the counters (0, i),
    # 23 of them as the mantissa of a float in [1, 2), minus 1, scaled to the range
    counter = lax.iota(jnp.uint32, size)
    hi, lo = threefry2x32(data[0], data[1], jnp.zeros_like(counter), counter)
    bits = lax.shift_right_logical(hi ^ lo, np.uint32(32 - 23)) | np.uint32(0x3F800000)
    floats = lax.bitcast_convert_type(bits, jnp.float32) - np.float32(1.0)
    minval = lax.convert_element_type(minval, jnp.float32)
    maxval = lax.convert_element_type(maxval, jnp.float32)
    return lax.max(minval, floats * (maxval - minval) + minval)


def _threefry_key_data(key):
    """The `(2,)` uint32 words of a Threefry key under JAX's partitionable scheme, or
    None when `jax.random` would draw some other way (then it draws itself)."""
    if not jax.config.jax_threefry_partitionable:
        return None
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if str(jax.random.key_impl(key)) != "threefry2x32" or key.shape != ():
            return None
        return jax.random.key_data(key)
    if (key.dtype != jnp.uint32 or key.shape != (2,)
            or jax.config.jax_default_prng_impl != "threefry2x32"):
        return None
    return key


#: Threefry-2x32's rotation distances, alternating per block of four rounds.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(key0, key1, x0, x1):
    """Threefry-2x32 with 20 rounds (Salmon et al., SC 2011; Random123), the hash behind
    `jax.random`: uint32 key words and counter arrays -> the two hashed uint32 arrays.

    The same function as JAX's `threefry2x32` primitive (JAX lowers it to these ops on
    GPU and TPU), unrolled so that XLA fuses it into the caller's loop.
    """
    ks = (key0, key1, key0 ^ key1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(r)) | lax.shift_right_logical(x1, np.uint32(32 - r))
            x1 = x0 ^ x1
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1
