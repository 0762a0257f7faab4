"""jaxrobust: image-corruption robustness sweeps and attribution studies in JAX.

Data contract, kept by every module: images are float32 in [0, 1], channels last;
one image is `(H, W, C)`, a batch `(N, H, W, C)`. Kernels and metrics work on one
image (or pair) and are batched with `jax.vmap`.
"""

from jaxrobust import (
    _prng,  # noqa: F401  (CPU: JAX's unrolled Threefry; bit-identical)
    corruptions,
    metrics,
)
from jaxrobust.corruptions import gaussian_noise, median_blur, scale_up, seed_levels
from jaxrobust.metrics import psnr, ssim

__version__ = "0.1.0"

__all__ = [
    "corruptions",
    "gaussian_noise",
    "median_blur",
    "metrics",
    "psnr",
    "scale_up",
    "seed_levels",
    "ssim",
]
