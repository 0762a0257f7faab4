"""The corruption study's 4-class task: which corruption, if any, was applied?"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _progress
from jaxrobust import corruptions as registry
from jaxrobust.sharding import local_mesh, pad_leading, shard_batch

ORIGINAL = "original"
DEFAULT_CORRUPTIONS = ("scale_up", "median_blur", "gaussian_noise")


@dataclasses.dataclass(frozen=True)
class Task:
    """A corruption-type data set: `images (N, H, W, C)`, `labels (N,)`, `levels (N,)`,
    and `ssim (N,)`: each image's SSIM (data range 1) to the clean image it was made
    from (1 for originals)."""

    images: np.ndarray
    labels: np.ndarray
    levels: np.ndarray
    class_names: tuple[str, ...]
    ssim: np.ndarray | None = None


def level_range(name: str, image_size: int, *,
                table: str = registry.tables.DEFAULT) -> tuple[float, float]:
    """Training range of levels for a corruption: its default schedule (in benchmark
    `table`) without the identity level (the level that leaves the image unchanged)."""
    levels = registry.seed_levels(name, image_size=image_size, table=table)
    corrupting = levels[levels != registry.get(name, table=table).identity_level]
    return float(corrupting.min()), float(corrupting.max())


@functools.lru_cache(maxsize=64)
def _corrupt_program(kernel, mesh):
    """`(keys (N,), images (N, H, W, C), levels (N,)) -> corrupted images`, split over
    `mesh`; built once per (kernel, mesh), so later calls with the same shapes reuse
    the compiled program."""
    return shard_batch(jax.vmap(kernel), in_axes=(0, 0, 0), mesh=mesh)


@jax.jit
def _ssim_program(clean, corrupted):
    """SSIM (data range 1) of each corrupted image to its clean one: `(N,)`."""
    from jaxrobust.metrics import ssim

    return jax.vmap(ssim)(clean, corrupted)


CHUNK = 32  # images per corrupting call: every set size shares one compiled program


@jax.jit
def _rotate(images, turns):
    """Image `i` of `images (N, H, W, C)` rotated by `turns[i]` quarter turns."""
    return jax.vmap(lambda im, t: jax.lax.switch(
        t, [functools.partial(jnp.rot90, k=k, axes=(0, 1)) for k in range(4)], im))(images, turns)


def _quarter_turns(key, n: int):
    """`jax.random.randint(key, (n,), 0, 4)`, drawn at a power-of-two length (at least
    1024) and cut: the same values (Threefry numbers its draws by position), one compiled
    draw for every set size (`randint` takes ~2 s to compile on CPU)."""
    return jax.random.randint(key, (max(1024, 1 << (n - 1).bit_length()),), 0, 4)[:n]


def _in_chunks(program, keys, images, levels):
    """`program` over `CHUNK` images at a time, the last chunk padded with copies of its
    first image, so that a training set and a test set of any size reuse one compiled
    program per corruption (each image's result does not depend on its chunk)."""
    n = images.shape[0]
    keys, images, levels = (pad_leading(a, CHUNK) for a in (keys, images, levels))
    parts = [program(keys[s:s + CHUNK], images[s:s + CHUNK], levels[s:s + CHUNK])
             for s in range(0, images.shape[0], CHUNK)]
    return jnp.concatenate(parts)[:n]


def corruption_task(key: jax.Array, images, *, corruptions: tuple[str, ...] = DEFAULT_CORRUPTIONS,
                    levels: dict[str, tuple[float, float]] | None = None,
                    table: str = registry.tables.DEFAULT,
                    devices: int | None = None, progress: bool | None = None) -> Task:
    """Builds the balanced corruption-type data set from clean images, on device.

    Every class gets one copy of every image: class `original` the image itself and
    each corruption class the image corrupted at a level drawn uniformly from its
    range (the study's schedule without its identity level, scaled to the image size;
    blur radii are integers). Every copy is first rotated by a random multiple of 90
    degrees (the study rotated its originals to balance the classes; rotating every
    class alike keeps rotation from giving the class away). Reproducible from `key`.

    Args:
        images: `(N, H, W, C)` float images in [0, 1].
        key: PRNG key.
        corruptions: corruption names (aliases allowed); their classes follow
            `original` in this order.
        levels: optional `{name: (low, high)}` overriding the ranges.
        table: the benchmark whose parameters the ImageNet-C corruptions follow
            (`corruptions.get`); its severities give the default ranges.
        devices: corrupt on this many local devices (default all); keys and levels
            are drawn per image first, so the result does not depend on it.
        progress: a bar over the classes (each corruption's program compiles on its
            first call): True / False, or None for the process default.

    Returns:
        A `Task` with `(len(corruptions) + 1) * N` images, labels and levels (0 for
        originals).
    """
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"corruption_task: images must be a non-empty (N, H, W, C) batch, "
                         f"got shape {images.shape}.")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"corruption_task: images must be square, got {images.shape[1:3]}.")
    names = [registry.get(n).name for n in corruptions]
    n, size = images.shape[0], images.shape[1]
    out_images, out_labels, out_levels, out_ssim = [], [], [], []
    classes = _progress.bar([ORIGINAL, *names], desc="corruption task", unit="class",
                            progress=progress, leave=False)
    for c, name in enumerate(classes):
        k_rot, k_level, k_apply = jax.random.split(jax.random.fold_in(key, c), 3)
        rotated = _rotate(images, _quarter_turns(k_rot, n))
        if name == ORIGINAL:
            out_images.append(rotated)
            out_levels.append(jnp.zeros((n,)))
            out_ssim.append(jnp.ones((n,)))
        else:
            low, high = (levels or {}).get(name) or level_range(name, size, table=table)
            drawn = jax.random.uniform(k_level, (n,), minval=low, maxval=high)
            if name == "median_blur":
                drawn = jnp.round(drawn)
            keys = jax.random.split(k_apply, n)
            program = _corrupt_program(registry.get(name, table=table).apply,
                                       local_mesh(devices))
            out_images.append(_in_chunks(program, keys, rotated, drawn))
            out_levels.append(drawn)
            out_ssim.append(_ssim_program(rotated, out_images[-1]))
        out_labels.append(jnp.full((n,), c, jnp.int32))
    return Task(np.asarray(jnp.concatenate(out_images)), np.asarray(jnp.concatenate(out_labels)),
                np.asarray(jnp.concatenate(out_levels), np.float32), (ORIGINAL, *names),
                np.asarray(jnp.concatenate(out_ssim), np.float32))


def split(n: int, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of `n` clean images (split before corrupting: no leakage)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 1:
        raise ValueError(f"{n} images are too few to split into train and test.")
    return np.sort(order[n_test:]), np.sort(order[:n_test])
