"""The corruption registry, the corruption study's intensity schedules and the
benchmarks' severity tables (ImageNet-C, CIFAR-10-C, Tiny-ImageNet-C, ImageNet
64x64-C: `tables`; MedMNIST-C's gamma).

Each corruption's level is either a physical parameter (pixels, a noise sigma, a JPEG
quality...) or, for the corruptions whose parameters come in tuples, ImageNet-C's
severity itself (continuous in [0, 5]). `severity(name, s)` converts a (fractional)
severity into the level either way, `seed_levels(name, protocol=...)` gives the default
sweep: `continuous` (the study's schedule as a continuous zoom / whole radii, today's
default) or `study` (the levels the study's own float64 loop produced).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import numpy as np

from jaxrobust.corruptions import blur, digital, tables, weather
from jaxrobust.corruptions.geometric import scale_up
from jaxrobust.corruptions.median import DEFAULT_MAX_RADIUS, disk_footprint, median_blur
from jaxrobust.corruptions.noise import gaussian_noise, impulse_noise, shot_noise, speckle_noise

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
        seed_schedule: the study's levels for a 174-pixel image (None: the default
            sweep is severities 0 .. 5 in steps of 0.25).
        family: ImageNet-C's grouping, "noise", "blur", "weather" or "digital" (the
            paper's: brightness is weather), "medical" (MedMNIST-C's additions), or
            "study" for the study's crop and median blur, which ImageNet-C lacks.
        study: one of the corruption study's three corruptions (`names("study")`);
            gaussian_noise is both that and ImageNet-C noise.
        severities: the level at ImageNet-C's (or MedMNIST-C's) severities 1..5 for a
            224-pixel image; `(1, 2, 3, 4, 5)` where the level is the severity.
        identity_level: the level that leaves the image unchanged (severity 0).
        size_scaled: the level is in pixels and `severity()` scales it with the image.
        min_level: smallest valid level.
        source: where the corruption and its table come from.
        encode: host levels (float64, `(L,)`) -> the traced array the sweep passes
            to `apply` per level; None: the levels as float32. The median's float radii
            travel as their exact footprints (`disk_footprint`), which float32 could
            not hold.
        table: the benchmark whose parameters `apply` and `severities` follow
            (`tables.BENCHMARKS`; `get(name, table=...)` binds another).
    """

    name: str
    apply: Callable
    label: str
    level_meaning: str
    max_level: Callable[[int, int], float]
    aliases: tuple[str, ...] = ()
    seed_schedule: Callable[[], np.ndarray] | None = None
    family: str = "study"
    study: bool = False
    severities: tuple[float, ...] | None = None
    identity_level: float = 0.0
    size_scaled: bool = False
    min_level: float = 0.0
    source: str = "the corruption study"
    encode: Callable[[np.ndarray], np.ndarray] | None = None
    table: str = tables.DEFAULT


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
    seed_schedule=_crop_schedule, study=True,
))
def _footprints(levels: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(disk_footprint(r)) for r in np.asarray(levels, np.float64)])


register(Corruption(
    name="median_blur", apply=median_blur, label="Blur",
    level_meaning="radius in pixels of the median's disk footprint, skimage's disk(r) "
                  "(any float)",
    max_level=lambda h, w: DEFAULT_MAX_RADIUS + 0.5, aliases=("blur",),
    seed_schedule=_blur_schedule, encode=_footprints, study=True,
))
register(Corruption(
    name="gaussian_noise", apply=gaussian_noise, label="Noise",
    level_meaning="standard deviation of additive Gaussian noise, clipped to [0, 1]",
    max_level=lambda h, w: 1.0, aliases=("noise",),
    seed_schedule=_noise_schedule, severities=tables.LEVELS["gaussian_noise"]["imagenet"],
    family="noise", study=True, source="the corruption study; ImageNet-C",
))

_SEVERITY = (1.0, 2.0, 3.0, 4.0, 5.0)
_SEVERITY_MEANING = "ImageNet-C severity, continuous in [0, 5] (parameters interpolated)"


def _suite(name, apply, label, meaning, family, severities=None, *, top, identity=0.0,
           low=0.0, scaled=False, source="ImageNet-C (Hendrycks & Dietterich, 2019)",
           aliases=()):
    register(Corruption(
        name=name, apply=apply, label=label, level_meaning=meaning,
        max_level=top if callable(top) else (lambda h, w, t=top: float(t)),
        aliases=aliases, family=family, severities=tuple(float(v) for v in (
            severities or tables.LEVELS[name][tables.DEFAULT])),
        identity_level=identity, size_scaled=scaled, min_level=low, source=source,
    ))


_suite("shot_noise", shot_noise, "Shot noise",
       "Poisson noise strength, 1 / photons at intensity 1", "noise", top=1.0)
_suite("impulse_noise", impulse_noise, "Impulse noise",
       "fraction of values set to 0 or 1 (salt and pepper)", "noise", top=1.0)
_suite("speckle_noise", speckle_noise, "Speckle noise",
       "sigma of multiplicative Gaussian noise", "noise", top=2.0, aliases=("speckle",),
       source="ImageNet-C (validation set); MedMNIST-C (ultrasound, OCT)")
_suite("gaussian_blur", blur.gaussian_blur, "Gaussian blur",
       "Gaussian sigma in pixels", "blur",
       top=lambda h, w: blur.default_max_sigma((h, w)), scaled=True,
       source="ImageNet-C (validation set)")
_suite("defocus_blur", blur.defocus_blur, "Defocus blur", _SEVERITY_MEANING, "blur",
       _SEVERITY, top=5.0)
_suite("glass_blur", blur.glass_blur, "Glass blur", _SEVERITY_MEANING, "blur",
       _SEVERITY, top=5.0)
_suite("motion_blur", blur.motion_blur, "Motion blur", _SEVERITY_MEANING, "blur",
       _SEVERITY, top=5.0)
_suite("zoom_blur", blur.zoom_blur, "Zoom blur", _SEVERITY_MEANING, "blur", _SEVERITY, top=5.0)
_suite("snow", weather.snow, "Snow", _SEVERITY_MEANING, "weather", _SEVERITY, top=5.0)
_suite("frost", weather.frost, "Frost", _SEVERITY_MEANING + "; procedural frost layer",
       "weather", _SEVERITY, top=5.0)
_suite("fog", weather.fog, "Fog", _SEVERITY_MEANING, "weather", _SEVERITY, top=5.0)
_suite("spatter", weather.spatter, "Spatter", _SEVERITY_MEANING, "weather", _SEVERITY,
       top=5.0, source="ImageNet-C (validation set)")
_suite("brightness", digital.brightness, "Brightness",
       "offset added to the HSV value (intensity for gray)", "weather", top=1.0, low=-1.0)
_suite("contrast", digital.contrast, "Contrast",
       "contrast factor about the channel mean (1 = unchanged)", "digital",
       top=10.0, identity=1.0)
_suite("elastic_transform", digital.elastic_transform, "Elastic",
       "gain of the smooth random displacement field", "digital",
       top=100.0, aliases=("elastic",))
_suite("pixelate", digital.pixelate, "Pixelate",
       "size factor of the box-downsized image (1 = unchanged)", "digital",
       top=1.0, identity=1.0, low=1e-6)
_suite("jpeg_compression", digital.jpeg_compression, "JPEG",
       "JPEG quality (libjpeg scale, 100 = finest)", "digital",
       top=100.0, identity=100.0, low=1.0, aliases=("jpeg",))
_suite("saturate", digital.saturate, "Saturate", _SEVERITY_MEANING, "digital", _SEVERITY,
       top=5.0, source="ImageNet-C (validation set)")
_suite("gamma", digital.gamma, "Gamma", "gamma exponent, x ** gamma (1 = unchanged)",
       "medical", (1.1, 1.2, 1.3, 1.4, 1.6), top=20.0, identity=1.0, low=0.05,
       aliases=("gamma_correction",), source="MedMNIST-C (Di Salvo et al., 2024), X-ray/CT")

#: ImageNet-C's 15 test corruptions, in the paper's order.
IMAGENET_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
              "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
              "elastic_transform", "pixelate", "jpeg_compression")
#: ImageNet-C's 4 validation corruptions.
IMAGENET_C_VALIDATION = ("speckle_noise", "gaussian_blur", "spatter", "saturate")


def names(family: str | None = None) -> list[str]:
    """Canonical names of the registered corruptions, in registration order.

    Args:
        family: only this family ("noise", "blur", "weather", "digital", "medical",
            ImageNet-C's grouping), or "study" for the corruption study's three
            (scale_up, median_blur, gaussian_noise); `None` for all.
    """
    return [n for n, c in _REGISTRY.items()
            if family is None or c.family == family or (family == "study" and c.study)]


def _canonical(name: str) -> str:
    canonical = _ALIASES.get(str(name).strip().lower())
    if canonical is None:
        known = ", ".join(f"{n} ({', '.join(c.aliases)})" if c.aliases else n
                          for n, c in _REGISTRY.items())
        raise ValueError(f"unknown corruption {name!r}; known corruptions: {known}.")
    return canonical


def in_table(name: str, table: str) -> bool:
    """Whether benchmark `table` has corruption `name` (its own values or formula)."""
    canonical, table = _canonical(name), tables.check(table)
    return (table in tables.LEVELS.get(canonical, {})
            or table in tables.ROWS.get(canonical, {}))


@functools.cache
def _bound(canonical: str, table: str) -> Corruption:
    base = _REGISTRY[canonical]
    if table == tables.DEFAULT or not in_table(canonical, table):
        return base
    apply = base.apply
    if "table" in inspect.signature(apply).parameters:
        apply = functools.partial(apply, table=table)
        functools.update_wrapper(apply, base.apply)
    changes = {"apply": apply, "table": table, "source": tables.SOURCE[table],
               "level_meaning": base.level_meaning.replace("ImageNet-C", table)}
    if canonical in tables.LEVELS and table in tables.LEVELS[canonical]:
        changes["severities"] = tuple(float(v) for v in tables.LEVELS[canonical][table])
    else:  # the level is the severity (elastic's three parameters in the small tables)
        changes.update(severities=_SEVERITY, level_meaning=_SEVERITY_MEANING,
                       max_level=lambda h, w: 5.0, identity_level=0.0, min_level=0.0)
    return dataclasses.replace(base, **changes)


def get(name: str, *, table: str = tables.DEFAULT) -> Corruption:
    """The registered corruption called `name` (or one of its aliases), bound to the
    parameters of benchmark `table` (`tables.BENCHMARKS`).

    With `table` other than `imagenet`, a corruption of that benchmark comes back with
    its kernel's `table=` option set, its `severities` from the table, and its
    `source` naming the generator; a corruption the benchmark lacks (the study's crop
    and median blur, MedMNIST-C's gamma) comes back as registered. The same
    `(name, table)` gives the same object (one compiled program per kernel).

    Raises:
        ValueError: unknown name (the message lists the known ones) or table.
    """
    return _bound(_canonical(name), tables.check(table))


def severity(name: str, s, *, image_size: int | None = None,
             table: str = tables.DEFAULT) -> np.ndarray:
    """The level of corruption `name` at severity `s` (scalar or array) of benchmark
    `table` (ImageNet-C by default; `tables.BENCHMARKS`).

    Severities 1..5 give the published table (the benchmark's; MedMNIST-C's for
    `gamma`); fractional severities interpolate linearly between them, and between 0
    (the identity level: no corruption) and 1. For the kernels whose level *is* the
    severity, this returns `s`. Levels in pixels (`gaussian_blur`'s sigma) are scaled
    by `image_size / tables.IMAGE_SIZE[table]` (224 for ImageNet-C, 32 for CIFAR-10-C,
    64 for the others; `image_size` None: the benchmark's own side); the
    severity-level kernels scale their own pixel parameters with the image they get
    (their `reference_size` option), and every other level is relative to the image
    already (noise, contrast, pixelate factor, zoom...).

    Raises:
        ValueError: `s` outside [0, 5], a corruption without a severity table, or an
            unknown table.
    """
    corruption = get(name, table=table)
    if corruption.severities is None:
        raise ValueError(f"{corruption.name} has no ImageNet-C severities; its levels are "
                         f"{corruption.level_meaning} (see seed_levels).")
    s = np.asarray(s, np.float32)
    if np.any(~np.isfinite(s)) or np.any((s < 0) | (s > 5)):
        raise ValueError(f"severity must lie in [0, 5], got {s.tolist()}.")
    levels = np.asarray((corruption.identity_level, *corruption.severities), np.float32)
    if corruption.size_scaled and image_size is not None:
        levels = levels * (image_size / tables.IMAGE_SIZE[table])
    return np.interp(s, np.arange(6, dtype=np.float32), levels).astype(np.float32)


PROTOCOLS = ("continuous", "study")
#: SSIM's data range under each protocol: 1 for images in [0, 1]; 2 is what the study's
#: `structural_similarity` took for float64 images without `data_range` (-1 .. 1).
SSIM_DATA_RANGE = {"continuous": 1.0, "study": 2.0}
_STUDY_STEPS = {"scale_up": 50, "median_blur": 20, "gaussian_noise": 50}


def study_intensities(name: str) -> np.ndarray:
    """The `intensity` values of the study's loop for one of its corruptions (float64).

    The loop starts at `intensity = -0.05` and adds 0.05 per step (50 crop, 20 blur,
    50 noise steps); for the crop it adds 0.06 more per step. The sums accumulate in
    float64, exactly as here, so that e.g. blur step 7 has `intensity / 0.05 ==
    6.999999999999999`.
    """
    canonical = get(name).name
    if canonical not in _STUDY_STEPS:
        raise ValueError(f"{canonical} is not one of the study's corruptions "
                         f"({', '.join(_STUDY_STEPS)}).")
    out, intensity = [], -0.05
    for _ in range(_STUDY_STEPS[canonical]):
        intensity = intensity + 0.05
        if canonical == "scale_up":
            intensity = intensity + 0.06
        out.append(intensity)
    return np.asarray(out, np.float64)


def _study_levels(name: str, image_size: int) -> np.ndarray:
    intensity = study_intensities(name)
    scale = image_size / SEED_IMAGE_SIZE
    if name == "scale_up":
        # sk.util.crop's widths went through numpy's _as_pairs(..., as_index=True):
        # np.round (half to even) to whole pixels
        return np.round(intensity * 4 * scale) if scale != 1 else np.round(intensity * 4)
    if name == "median_blur":
        radius = intensity / 0.05
        if scale == 1:
            return radius
        # disk(r) is empty for 0 < r < 0.59 (its grid misses the centre), which
        # scikit-image cannot filter with: scaled radii below 1 round to 0 or 1
        radius = radius * scale
        return np.where(radius < 1, np.round(radius), radius)
    return intensity / 20.0  # gaussian_noise: sigma


def seed_levels(name: str, *, image_size: int = SEED_IMAGE_SIZE,
                protocol: str = "continuous", table: str = tables.DEFAULT) -> np.ndarray:
    """The default sweep levels of corruption `name`.

    `protocol="study"` gives what the study's float64 loop computed (float64 array):

    * `scale_up`: 50 steps, whole pixels per side `round(4 * intensity)` (NumPy's
      half-to-even rounding, as `sk.util.crop` applied it): 0, 1, 1, 2, 2, 2, 3 .. 22.
    * `median_blur`: 20 steps, the float radius `intensity / 0.05` (0.0, 1.0, 2.0,
      3.0000000000000004, .., 5.999999999999999, .., 19.000000000000004), whose
      `disk` is what the study filtered with.
    * `gaussian_noise`: 50 steps, sigma `intensity / 20`.

    For another `image_size` the study protocol scales the pixel-valued intensities by
    `image_size / 174` before the study's own conversion: crop widths are
    `round(4 * intensity * s)` (still whole pixels), radii `intensity / 0.05 * s` (still
    float radii with `disk`'s float grid, except that radii below 1 round to 0 or 1:
    `disk(r)` is empty for `0 < r < 0.59`); sigma does not depend on size.

    `protocol="continuous"` (the default, float32) is the study's schedule as a
    continuous family: `scale_up` `4 * (0.06 + 0.11 k)` pixels per side (fractional:
    a continuous zoom, 0.24 .. 21.8), `median_blur` radius `k` (0 .. 19, whole),
    `gaussian_noise` sigma `0.0025 k`; pixel levels scaled by `image_size / 174` (radii
    then rounded).

    Every other corruption, either protocol, and every corruption of a benchmark
    `table` other than `imagenet` (gaussian_noise included): 21 steps,
    `severity(name, s, table=table)` for s = 0, 0.25, .., 5.

    Raises:
        ValueError: unknown corruption or protocol.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    corruption = get(name, table=table)
    if corruption.seed_schedule is None or corruption.table != tables.DEFAULT:
        return severity(name, np.linspace(0.0, 5.0, 21), image_size=image_size, table=table)
    if protocol == "study":
        return _study_levels(corruption.name, image_size)
    levels = corruption.seed_schedule()
    if image_size != SEED_IMAGE_SIZE and corruption.name != "gaussian_noise":
        levels = levels * (image_size / SEED_IMAGE_SIZE)
        if corruption.name == "median_blur":
            levels = np.round(levels)
    return levels.astype(np.float32)


def kernel_levels(name: str, levels) -> np.ndarray:
    """What the sweep passes to corruption `name`'s kernel for each of `levels`.

    float32 levels, or the corruption's own encoding of them (the median's exact
    footprints: a float64 radius such as 7.999999999999999 is not a float32).
    """
    corruption = get(name)
    levels = np.asarray(levels, np.float64)
    if corruption.encode is None:
        return levels.astype(np.float32)
    return corruption.encode(levels)
