"""Image corruptions as pure JAX kernels.

Every kernel is `fn(key, image, level, *, static_options) -> image` on one
`(H, W, C)` float image in [0, 1]. `level` is the kernel's own physical parameter
(pixels cropped per side, disk radius in pixels, noise sigma) and may be traced, so
one compiled program serves every level and `jax.vmap` works over images, levels and
keys. Deterministic kernels ignore `key`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxrobust import corruptions
    >>> image = jnp.full((32, 32, 1), 0.5)
    >>> blur = corruptions.get("blur")
    >>> levels = jnp.asarray(corruptions.seed_levels("blur")[:4])
    >>> jax.vmap(blur.apply, in_axes=(None, None, 0))(None, image, levels).shape
    (4, 32, 32, 1)
"""

from jaxrobust.corruptions.geometric import scale_up
from jaxrobust.corruptions.median import DEFAULT_MAX_RADIUS, disk_row_widths, median_blur
from jaxrobust.corruptions.noise import gaussian_noise
from jaxrobust.corruptions.registry import (
    SEED_IMAGE_SIZE,
    Corruption,
    get,
    names,
    register,
    seed_levels,
)

__all__ = [
    "DEFAULT_MAX_RADIUS",
    "SEED_IMAGE_SIZE",
    "Corruption",
    "disk_row_widths",
    "gaussian_noise",
    "get",
    "median_blur",
    "names",
    "register",
    "scale_up",
    "seed_levels",
]
