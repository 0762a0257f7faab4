"""A fusion boundary that XLA keeps, for heavy elementwise work on CPU.

XLA fuses a chain of elementwise ops into one loop over the *output's* shape, and its
CPU backend vectorises that loop along the output's minor axis. An image's minor axis
is its channels: 1 or 3 values, too short for a SIMD register. Cheap, memory-bound
fusions do not care, but a heavy one (the Threefry hash behind every random draw,
shot noise's inverse-CDF search) runs several times slower with an `(H, W, 3)` output
than the same work with a flat one (docs/architecture.md, "XLA CPU notes"). Reshaping
to flat and back does not help: the reshape is fused in and the loop is again over
`(H, W, 3)`. `lax.optimization_barrier` does not stop fusion on CPU either.

`flat(fn, *args)` runs `fn` on flattened arrays as the taken branch of a `lax.cond`
whose predicate XLA cannot fold (it passes an `optimization_barrier`), so `fn` is
compiled as its own computation with a flat output, and the reshape back to the
caller's shape stays outside. Values are unchanged; only the compiled loops are. Works
under `vmap` (the predicate is never batched), `jit` and `grad` (derivatives are taken
of `fn` itself, unseparated).

Only XLA's CPU backend needs this: when the default backend is not CPU, `separately`
is a plain call of `fn` (GPU and TPU fusions tile over the whole output anyway). So it
is when called eagerly, on concrete arrays: there is no fusion to keep apart, and an
eager `lax.cond` of a fresh closure would compile anew at every call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def separately(fn, *args):
    """`fn(*args)`, compiled apart from the surrounding computation (its own fused
    loops, over its own output shapes). `fn` returns an array or a pytree of them.

    Differentiable: derivatives are `fn`'s own (`jax.jvp(fn)`, and reverse mode by
    transposing it), computed without the separation. Off CPU, or outside any
    transformation (no argument is a tracer): `fn(*args)`."""
    if jax.default_backend() != "cpu" or not any(
            isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args)):
        return fn(*args)  # off CPU, or called eagerly: nothing to separate from

    @jax.custom_jvp
    def run(*args):
        out = jax.eval_shape(fn, *args)

        def never(*args):  # the branch not taken: only its shapes matter
            return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), out)

        return lax.cond(lax.optimization_barrier(jnp.bool_(True)), fn, never, *args)

    @run.defjvp
    def run_jvp(primals, tangents):
        return jax.jvp(fn, primals, tangents)

    return run(*args)


def flat(fn, *arrays):
    """`fn` applied to `arrays` flattened to 1-D, its 1-D result reshaped to the first
    array's shape; compiled apart (see the module docstring). `fn` must be elementwise
    (or at least map flat positions to flat positions)."""
    shape = arrays[0].shape
    return separately(lambda *xs: fn(*(x.reshape(-1) for x in xs)), *arrays).reshape(shape)
