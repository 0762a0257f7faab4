"""Noise kernels: additive Gaussian, shot (Poisson), impulse (salt and pepper), speckle."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrobust import _fusion, _prng
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
    # jax.random.normal's values: the uniforms drawn in one flat loop, the normals made
    # and added in another (`jaxrobust._prng`, `jaxrobust._fusion`): fast on CPU, and the
    # same code for every value whatever the batch, so results do not depend on it
    # `finish` inside the flat loop (as in every noise kernel): after it, three consumers
    # (SSIM, its mean, a model) each got their own copy of the clip-and-select (~10 % of
    # the sweep's noise stage without the model)
    u = _prng.normal_uniforms(key, image.size)
    return _fusion.flat(lambda x, u: finish(x + sigma * _prng.normal_of(u), ok, image),
                        image.astype(jnp.float32), u)


#: Photon counts at or below which `shot_noise` samples the Poisson law exactly.
EXACT_PHOTONS = 100.0
_ROWS = 1024  # the inverse-CDF table's grid of means: 0, h, 2h, ..., EXACT_PHOTONS
_STEP = EXACT_PHOTONS / _ROWS  # h
_COUNTS = 192  # counts per table row: P(X >= 192) < 1e-15 for a mean of 100
_REMAINDER_STEPS = 10  # P(Poisson(h) > 10) < 1e-17


@functools.lru_cache(maxsize=1)
def _poisson_cdf_table() -> np.ndarray:
    """`(ROWS + 1) * COUNTS` float32: row `j` is the CDF of Poisson(j * h), computed in
    float64 once (the table is a constant of every program; no per-call work)."""
    lam = np.arange(_ROWS + 1, dtype=np.float64) * _STEP
    pmf = np.empty((_ROWS + 1, _COUNTS))
    pmf[:, 0] = np.exp(-lam)
    for k in range(1, _COUNTS):
        pmf[:, k] = pmf[:, k - 1] * lam / k
    cdf = np.cumsum(pmf, axis=1)
    cdf[:, -1] = np.inf
    return cdf.astype(np.float32).reshape(-1)


#: Where the inverse CDF is searched: `WINDOW` counts from `guess - WINDOW_BELOW`, the
#: guess being the Cornish-Fisher quantile `lam + z sqrt(lam) + (z^2 - 1) / 6`
#: (`z = ndtri(u)`). Over every grid mean and every u in [1e-7, 1) the exact quantile
#: lies within [guess - 5, guess + 2] (checked in float32, as the kernel computes the
#: guess, at every CDF breakpoint of every row and one ulp either side;
#: `tests/test_suite.py` re-checks); the window keeps two counts of margin each side.
_WINDOW = 16
_WINDOW_BELOW = 7


def _poisson(u, lam):
    """`(counts, z)`: Poisson(`lam`) counts for `0 <= lam <= EXACT_PHOTONS`, by
    inversion of the flat uniform draws `u` (1-D, like `lam`), and `z = ndtri(u)`
    (the normal quantile the search starts from, which `shot_noise` reuses above
    `EXACT_PHOTONS`).

    Exact by additivity, Poisson(a + b) = Poisson(a) + Poisson(b) for independent
    draws: `a` is `lam` rounded down to the table's grid, inverted in its CDF row
    within a 16-count window around the normal-approximation quantile, as the count of
    window entries below `u`; the rest `b < h` is inverted by a short sequential
    search on `u`'s position inside the chosen CDF step, which is uniform and
    independent of the step (so one uniform draw serves both). The table does not
    depend on the call, so its reads are gathers from a constant: the window is read
    as one contiguous 16-entry slice per value (XLA's CPU loops copy a slice as a
    block, and run single-entry gathers as scalar loops), the step's ends by two
    single reads.

    Four passes, each compiled apart (`_fusion.separately`): XLA's CPU loops run
    scalar wherever they gather, so the table's reads get passes of their own and the
    arithmetic around them (the guess, the remainder) stays vectorised.
    """
    def window_start(u, lam):  # flat index of the window's first entry, and z
        z = jax.scipy.special.ndtri(u)
        row = jnp.floor(jnp.clip(lam, 0.0, EXACT_PHOTONS) / _STEP)
        grid_lam = row * _STEP
        guess = jnp.floor(grid_lam + z * jnp.sqrt(grid_lam) + (z * z - 1.0) / 6.0 + 0.5)
        low = jnp.clip(guess - _WINDOW_BELOW, 0, _COUNTS - _WINDOW).astype(jnp.int32)
        return row.astype(jnp.int32) * _COUNTS + low, z

    def steps_in(u, start):  # entries below u: smallest k with cdf[k] >= u is start + it
        table = jnp.asarray(_poisson_cdf_table())
        window = jax.vmap(lambda s: lax.dynamic_slice(table, (s,), (_WINDOW,)))(start)
        return jnp.sum((window[:, :_WINDOW - 1] < u[:, None]).astype(jnp.int32), axis=1)

    def position(u, start, steps):  # u's place inside its CDF step, uniform on [0, 1]
        table = jnp.asarray(_poisson_cdf_table())
        k = start + steps
        upper = jnp.minimum(table[k], 1.0)
        lower = jnp.where(k % _COUNTS > 0, table[jnp.maximum(k - 1, 0)], 0.0)
        return jnp.clip((u - lower) / jnp.maximum(upper - lower, 1e-30), 0.0, 1.0)

    def counts(lam, start, steps, v):
        scaled = jnp.clip(lam, 0.0, EXACT_PHOTONS) / _STEP
        rest = (scaled - jnp.floor(scaled)) * _STEP
        p = jnp.exp(-rest)
        cdf = p
        extra = jnp.zeros(lam.shape, jnp.float32)
        for i in range(1, _REMAINDER_STEPS + 1):
            extra = extra + (v > cdf)
            p = p * rest / i
            cdf = cdf + p
        return (start % _COUNTS + steps).astype(jnp.float32) + extra

    start, z = _fusion.separately(window_start, u, lam)
    steps = _fusion.separately(steps_in, u, start)
    v = _fusion.separately(position, u, start, steps)
    return _fusion.separately(counts, lam, start, steps, v), z


def shot_noise(key, image, strength):
    """Poisson (shot) noise: `Poisson(image / strength) * strength`, clipped to [0, 1].

    ImageNet-C's `shot_noise` with `c` photons at full intensity is `strength = 1 / c`
    (severities 1-5: c = 60, 25, 12, 5, 3). `strength == 0` leaves the image as is.
    Up to `EXACT_PHOTONS` photons (strength >= 0.01, every ImageNet-C severity) the
    counts follow the Poisson law exactly; above, where the noise is faint, they are
    drawn from its normal approximation `round(N(lambda, lambda))`.

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

    def noisy(x):  # flat: the table search is heavy (see jaxrobust._fusion)
        u = _prng.uniform(key, x.shape, jnp.float32, 1e-7, 1.0)
        lam = x * photons
        exact, z = _poisson(u, lam)
        approx = jnp.maximum(jnp.round(lam + jnp.sqrt(lam) * z), 0.0)
        counts = jnp.where(photons <= EXACT_PHOTONS, exact, approx)
        return jnp.where(strength > 0, counts / photons, x)

    return _fusion.flat(lambda x: finish(noisy(x), ok, image), image.astype(jnp.float32))


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
    # one draw: u < amount replaces the value, and u < amount / 2 (half of those,
    # independently of everything else) makes it salt
    def salt_and_pepper(x):
        u = _prng.uniform_flat(key, x.size)
        return jnp.where(u < amount, (u < 0.5 * amount).astype(jnp.float32), x)

    return _fusion.flat(lambda x: finish(salt_and_pepper(x), ok, image),
                        image.astype(jnp.float32))


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
    u = _prng.normal_uniforms(key, image.size)  # jax.random.normal's, as gaussian_noise
    return _fusion.flat(lambda x, u: finish(x + x * sigma * _prng.normal_of(u), ok, image),
                        image.astype(jnp.float32), u)
