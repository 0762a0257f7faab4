"""Additive Gaussian noise with scikit-image's `random_noise` semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrobust._validation import check_image, check_level


def gaussian_noise(key, image, sigma):
    """Adds zero-mean Gaussian noise of standard deviation `sigma` and clips to [0, 1].

    Same distribution and clipping as
    `skimage.util.random_noise(image, mode='gaussian', var=sigma**2, clip=True)` for an
    image in [0, 1]; the numbers differ because the generator is JAX's.

    Args:
        key: a `jax.random` key; the same key gives the same noise.
        image: `(H, W, C)` float image in [0, 1].
        sigma: noise standard deviation, `0 <= sigma <= 1`. May be traced; a traced
            sigma out of range gives an all-NaN image.

    Returns:
        The noisy `(H, W, C)` image, same dtype as `image`.
    """
    image = check_image(image, fn="gaussian_noise")
    sigma, ok = check_level(sigma, fn="gaussian_noise", what="noise sigma", low=0.0, high=1.0)
    noise = jax.random.normal(key, image.shape, jnp.float32)
    out = jnp.clip(image.astype(jnp.float32) + sigma * noise, 0.0, 1.0)
    return jnp.where(ok, out, jnp.nan).astype(image.dtype)
