"""Noise kernels: additive Gaussian, shot (Poisson), impulse (salt and pepper), speckle."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrobust._validation import check_image, check_level
from jaxrobust.corruptions._ops import finish


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


def shot_noise(key, image, strength):
    """Poisson (shot) noise: `Poisson(image / strength) * strength`, clipped to [0, 1].

    ImageNet-C's `shot_noise` with `c` photons at full intensity is `strength = 1 / c`
    (severities 1-5: c = 60, 25, 12, 5, 3). `strength == 0` leaves the image as is.

    Args:
        key: a `jax.random` key.
        image: `(H, W, C)` float image in [0, 1].
        strength: `0 <= strength <= 1`, the variance of the noise at intensity 1. May
            be traced; a traced strength out of range gives an all-NaN image.

    Returns:
        The noisy `(H, W, C)` image.
    """
    image = check_image(image, fn="shot_noise")
    strength, ok = check_level(strength, fn="shot_noise", what="1 / photons at intensity 1",
                               low=0.0, high=1.0)
    photons = 1.0 / jnp.maximum(strength, 1e-6)
    x = image.astype(jnp.float32)
    counts = jax.random.poisson(key, x * photons, x.shape).astype(jnp.float32)
    out = jnp.where(strength > 0, counts / photons, x)
    return finish(out, ok, image)


def impulse_noise(key, image, amount):
    """Salt-and-pepper noise: each value is replaced, with probability `amount`, by 0 or
    1 (even odds), independently per channel.

    The distribution of `skimage.util.random_noise(image, mode='s&p', amount=amount)`,
    which ImageNet-C's `impulse_noise` calls (severities 1-5: 0.03, 0.06, 0.09, 0.17,
    0.27).

    Args:
        key: a `jax.random` key.
        image: `(H, W, C)` float image in [0, 1].
        amount: fraction of values replaced, `0 <= amount <= 1`; may be traced.
    """
    image = check_image(image, fn="impulse_noise")
    amount, ok = check_level(amount, fn="impulse_noise", what="fraction of values replaced",
                             low=0.0, high=1.0)
    k_flip, k_salt = jax.random.split(key)
    flipped = jax.random.uniform(k_flip, image.shape) < amount
    salt = jax.random.uniform(k_salt, image.shape) < 0.5
    out = jnp.where(flipped, salt.astype(jnp.float32), image.astype(jnp.float32))
    return finish(out, ok, image)


def speckle_noise(key, image, sigma):
    """Multiplicative Gaussian noise `image * (1 + sigma * N(0, 1))`, clipped to [0, 1].

    ImageNet-C's `speckle_noise` (severities 1-5: sigma 0.15, 0.2, 0.35, 0.45, 0.6),
    also MedMNIST-C's speckle for ultrasound and OCT.

    Args:
        key: a `jax.random` key.
        image: `(H, W, C)` float image in [0, 1].
        sigma: `0 <= sigma <= 2`; may be traced.
    """
    image = check_image(image, fn="speckle_noise")
    sigma, ok = check_level(sigma, fn="speckle_noise", what="multiplicative noise sigma",
                            low=0.0, high=2.0)
    x = image.astype(jnp.float32)
    out = x + x * sigma * jax.random.normal(key, x.shape, jnp.float32)
    return finish(out, ok, image)
