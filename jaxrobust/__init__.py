"""jaxrobust: image-corruption robustness sweeps and attribution studies in JAX.

Data contract, kept by every module: images are float32 in [0, 1], channels last;
one image is `(H, W, C)`, a batch `(N, H, W, C)`. Kernels and metrics work on one
image (or pair) and are batched with `jax.vmap`.

Importing jaxrobust changes nothing in JAX's process-wide state; the opt-in CPU
speed-ups are in `jaxrobust.cpu` (the command line turns them on).
"""

from jaxrobust import corruptions, cpu, metrics
from jaxrobust.corruptions import gaussian_noise, median_blur, scale_up, seed_levels
from jaxrobust.metrics import psnr, ssim

__version__ = "0.1.0"

__all__ = [
    "corruptions",
    "cpu",
    "gaussian_noise",
    "median_blur",
    "metrics",
    "psnr",
    "scale_up",
    "seed_levels",
    "ssim",
]
