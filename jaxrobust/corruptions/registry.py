"""The corruption registry and the corruption study's intensity schedules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxrobust.corruptions.geometric import scale_up
from jaxrobust.corruptions.median import DEFAULT_MAX_RADIUS, median_blur
from jaxrobust.corruptions.noise import gaussian_noise

#: Image side (pixels) the study's schedules were written for: 224 - 50.
SEED_IMAGE_SIZE = 174


@dataclasses.dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    Attributes:
        name: canonical name, also the class name in the corruption-type task.
        apply: the kernel, `apply(key, image, level) -> image` on one `(H, W, C)` image.
        label: the study's name for the class ("Crop", "Blur", "Noise").
        level_meaning: what the level measures, in words with its unit.
        max_level: largest valid level for an image of side `(H, W)`.
        aliases: other accepted names.
        seed_schedule: the study's levels for a 174-pixel image.
    """

    name: str
    apply: Callable
    label: str
    level_meaning: str
    max_level: Callable[[int, int], float]
    aliases: tuple[str, ...]
    seed_schedule: Callable[[], np.ndarray]


def _crop_schedule() -> np.ndarray:
    # The study's loop: intensity starts at -0.05 and grows by 0.05 + 0.06 per step;
    # 4 * intensity pixels are cropped from each side.
    k = np.arange(50)
    return (4.0 * (0.06 + 0.11 * k)).astype(np.float32)


def _blur_schedule() -> np.ndarray:
    return np.arange(20, dtype=np.float32)  # disk(intensity / 0.05), intensity = 0.05 k


def _noise_schedule() -> np.ndarray:
    return (0.05 * np.arange(50) / 20.0).astype(np.float32)  # sigma = intensity / 20


_REGISTRY: dict[str, Corruption] = {}
_ALIASES: dict[str, str] = {}


def register(corruption: Corruption) -> Corruption:
    """Adds a corruption under its name and aliases; returns it."""
    for key in (corruption.name, *corruption.aliases):
        if key in _ALIASES:
            raise ValueError(f"corruption name {key!r} is already registered.")
        _ALIASES[key] = corruption.name
    _REGISTRY[corruption.name] = corruption
    return corruption


register(Corruption(
    name="scale_up", apply=scale_up, label="Crop",
    level_meaning="pixels cropped from each side, then resized back",
    max_level=lambda h, w: (min(h, w) - 1) / 2, aliases=("crop",),
    seed_schedule=_crop_schedule,
))
register(Corruption(
    name="median_blur", apply=median_blur, label="Blur",
    level_meaning="radius in pixels of the median's disk footprint (integer)",
    max_level=lambda h, w: float(DEFAULT_MAX_RADIUS), aliases=("blur",),
    seed_schedule=_blur_schedule,
))
register(Corruption(
    name="gaussian_noise", apply=gaussian_noise, label="Noise",
    level_meaning="standard deviation of additive Gaussian noise, clipped to [0, 1]",
    max_level=lambda h, w: 1.0, aliases=("noise",),
    seed_schedule=_noise_schedule,
))


def names() -> list[str]:
    """Canonical names of the registered corruptions, in registration order."""
    return list(_REGISTRY)


def get(name: str) -> Corruption:
    """The registered corruption called `name` (or one of its aliases).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    canonical = _ALIASES.get(str(name).strip().lower())
    if canonical is None:
        known = ", ".join(f"{n} ({', '.join(c.aliases)})" if c.aliases else n
                          for n, c in _REGISTRY.items())
        raise ValueError(f"unknown corruption {name!r}; known corruptions: {known}.")
    return _REGISTRY[canonical]


def seed_levels(name: str, *, image_size: int = SEED_IMAGE_SIZE) -> np.ndarray:
    """The corruption study's levels for `name`, as a float32 array.

    * `scale_up`: 50 steps, `4 * (0.06 + 0.11 k)` pixels per side (0.24 .. 21.8).
    * `median_blur`: 20 steps, disk radius `k` (0 .. 19).
    * `gaussian_noise`: 50 steps, sigma `0.0025 k` (0 .. 0.1225).

    The pixel-valued schedules were written for 174-pixel images. For another
    `image_size` they are scaled by `image_size / 174` so that the corruption is the
    same relative to the image (blur radii are then rounded to integers); noise sigma
    does not depend on size.
    """
    corruption = get(name)
    levels = corruption.seed_schedule()
    if image_size != SEED_IMAGE_SIZE and corruption.name != "gaussian_noise":
        levels = levels * (image_size / SEED_IMAGE_SIZE)
        if corruption.name == "median_blur":
            levels = np.round(levels)
    return levels.astype(np.float32)
