"""Input checks shared by every kernel and engine.

Shapes and dtypes are static under `jax.jit`, so the checks on them raise a
`ValueError` at trace time. Levels may be traced: a concrete level out of range
raises at once; a traced one cannot be inspected, so kernels return NaN images
for it (a loud, not a silent, wrong answer) and document that.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_image(image, *, fn: str) -> jax.Array:
    """Returns `image` as a float array after checking it is one `(H, W, C)` image.

    Args:
        image: the candidate image.
        fn: name of the calling function, used in the message.

    Raises:
        ValueError: not floating point, or not of rank 3.
    """
    dtype = getattr(image, "dtype", None)
    if dtype is None:
        image = np.asarray(image)
        dtype = image.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
                f"{fn}: image must be float32 in [0, 1], got dtype {dtype}; "
                "convert it with image.astype(np.float32) / 255 for 8-bit data."
        )
    ndim = len(np.shape(image))
    if ndim != 3:
        hint = (
                "add a channel axis with image[..., None]" if ndim == 2
                else "call the kernel on one image and jax.vmap it over the batch" if ndim == 4
                else "pass one (H, W, C) image"
        )
        raise ValueError(
                f"{fn}: expected one image of shape (H, W, C), got shape {tuple(np.shape(image))}; "
                f"{hint}."
        )
    return jnp.asarray(image)


def is_traced(x) -> bool:
    """Whether `x` is an abstract value inside a jax transformation."""
    return isinstance(x, jax.core.Tracer)


def check_level(level, *, fn: str, what: str, low: float, high: float, dtype=jnp.float32):
    """Checks a (possibly traced) scalar level against `[low, high]`.

    Args:
        level: the level, a Python number or a scalar array (traced or not).
        fn: calling function, for the message.
        what: what the level means ("crop in pixels", ...), for the message.
        low, high: inclusive bounds.
        dtype: dtype the level is returned as.

    Returns:
        `(level, ok)`: the level as a scalar array of `dtype` and a boolean scalar
        that is False when a traced level is out of range (concrete levels out of
        range raise instead).

    Raises:
        ValueError: a non-scalar level, or a concrete level out of range or NaN.
    """
    if np.ndim(level) != 0:
        raise ValueError(
                f"{fn}: level ({what}) must be a scalar, got shape {np.shape(level)}; "
                "use jax.vmap to apply several levels."
        )
    if not is_traced(level):
        value = float(np.asarray(level))
        if not (low <= value <= high):
            raise ValueError(
                    f"{fn}: level ({what}) must lie in [{low:g}, {high:g}], got {value:g}."
            )
    level = jnp.asarray(level)
    ok = (level >= low) & (level <= high)
    return level.astype(dtype), ok
