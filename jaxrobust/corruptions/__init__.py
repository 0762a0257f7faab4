"""Image corruptions as pure JAX kernels.

Every kernel is `fn(key, image, level, *, static_options) -> image` on one
`(H, W, C)` float image in [0, 1]. `level` is the kernel's own physical parameter
(pixels cropped per side, disk radius in pixels, noise sigma, JPEG quality) or, for
the ImageNet-C corruptions whose parameters come in tuples, the continuous severity;
it may be traced, so one compiled program serves every level and `jax.vmap` works
over images, levels and keys. Deterministic kernels ignore `key`; random ones draw
everything from it.

The suite: the corruption study's three (`scale_up`, `median_blur`,
`gaussian_noise`), ImageNet-C's 15 + 4 (`IMAGENET_C`, `IMAGENET_C_VALIDATION`) and
MedMNIST-C's `gamma`; `severity(name, s)` maps ImageNet-C severities to levels.
`table=` (`tables.BENCHMARKS`) switches to CIFAR-10-C's, Tiny-ImageNet-C's or ImageNet
64x64-C's generator: `get(name, table=...)` binds a kernel to it,
`severity(name, s, table=...)` reads its levels.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxrobust import corruptions
    >>> image = jnp.full((32, 32, 1), 0.5)
    >>> blur = corruptions.get("blur")
    >>> levels = jnp.asarray(corruptions.seed_levels("blur")[:4])
    >>> jax.vmap(blur.apply, in_axes=(None, None, 0))(None, image, levels).shape
    (4, 32, 32, 1)
"""

from jaxrobust.corruptions import tables
from jaxrobust.corruptions.blur import (
    defocus_blur,
    gaussian_blur,
    glass_blur,
    motion_blur,
    zoom_blur,
)
from jaxrobust.corruptions.digital import (
    brightness,
    contrast,
    elastic_transform,
    gamma,
    jpeg_compression,
    pixelate,
    saturate,
)
from jaxrobust.corruptions.geometric import scale_up
from jaxrobust.corruptions.median import DEFAULT_MAX_RADIUS, disk_footprint, median_blur
from jaxrobust.corruptions.noise import gaussian_noise, impulse_noise, shot_noise, speckle_noise
from jaxrobust.corruptions.registry import (
    IMAGENET_C,
    IMAGENET_C_VALIDATION,
    PROTOCOLS,
    SEED_IMAGE_SIZE,
    SSIM_DATA_RANGE,
    Corruption,
    get,
    in_table,
    kernel_levels,
    names,
    register,
    seed_levels,
    severity,
    study_intensities,
)
from jaxrobust.corruptions.weather import fog, frost, snow, spatter

__all__ = [
    "DEFAULT_MAX_RADIUS",
    "IMAGENET_C",
    "IMAGENET_C_VALIDATION",
    "PROTOCOLS",
    "SEED_IMAGE_SIZE",
    "SSIM_DATA_RANGE",
    "Corruption",
    "brightness",
    "contrast",
    "defocus_blur",
    "disk_footprint",
    "elastic_transform",
    "fog",
    "frost",
    "gamma",
    "gaussian_blur",
    "gaussian_noise",
    "get",
    "in_table",
    "kernel_levels",
    "glass_blur",
    "impulse_noise",
    "jpeg_compression",
    "median_blur",
    "motion_blur",
    "names",
    "pixelate",
    "register",
    "saturate",
    "scale_up",
    "seed_levels",
    "severity",
    "study_intensities",
    "tables",
    "shot_noise",
    "snow",
    "spatter",
    "speckle_noise",
    "zoom_blur",
]
