"""Checks of attribution maps: faithfulness (deletion / insertion), drift under
corruptions, and the model-parameter randomisation sanity check.

Each takes a pure classifier `apply_fn(params, images) -> logits`, computes every
fraction, level or cascade step in one compiled call, and compares maps by SSIM and
Spearman rank correlation of their channel-summed magnitudes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _prng
from jaxrobust.attribution.gradients import _check, integrated_gradients, make_baseline, saliency


def deletion_insertion(apply_fn: Callable, params, images, targets, attributions, *,
                       fractions=None, baseline=None) -> dict:
    """Deletion and insertion curves (faithfulness), all fractions in one compiled call.

    Pixels are ranked by their attribution (summed over channels, largest first). For
    each fraction `f`, *deletion* replaces the top `f` of the pixels with the baseline
    and *insertion* starts from the baseline and puts back the top `f` of the pixels;
    the target class's softmax probability is recorded. A faithful map makes deletion
    fall fast (low area) and insertion rise fast (high area).

    Args:
        apply_fn, params: the classifier.
        images: `(N, H, W, C)`; targets: `(N,)`; attributions: `(N, H, W, C)`.
        fractions: 1-D fractions in [0, 1] (default 0, 0.05, ..., 1).
        baseline: see `make_baseline` (default black), a kind or an array.

    Returns:
        `{"fractions": (F,), "deletion": (N, F), "insertion": (N, F),
        "deletion_auc": (N,), "insertion_auc": (N,)}` (areas by the trapezoid rule).

    References:
        Petsiuk et al., "RISE: Randomized Input Sampling for Explanation", 2018.
    """
    images, targets = _check(images, targets, "deletion_insertion")
    attributions = jnp.asarray(attributions)
    if attributions.shape != images.shape:
        raise ValueError(f"deletion_insertion: attributions {attributions.shape} must have the "
                         f"images' shape {images.shape}.")
    fractions = jnp.linspace(0.0, 1.0, 21) if fractions is None else jnp.asarray(fractions)
    base = make_baseline(None, baseline, images)
    n, h, w, _ = images.shape
    score = attributions.sum(-1).reshape(n, -1)
    rank = jnp.argsort(jnp.argsort(-score, axis=1), axis=1).reshape(n, h, w, 1)

    def at(f):
        top = rank < jnp.round(f * h * w)
        probs = lambda x: jnp.take_along_axis(jax.nn.softmax(apply_fn(params, x), -1),
                                              targets[:, None], 1)[:, 0]
        return probs(jnp.where(top, base, images)), probs(jnp.where(top, images, base))

    deletion, insertion = jax.vmap(at)(fractions)  # (F, N) each
    step = (fractions[1:] - fractions[:-1])[:, None]
    area = lambda y: jnp.sum(step * (y[1:] + y[:-1]) / 2, axis=0)
    return {"fractions": fractions, "deletion": deletion.T, "insertion": insertion.T,
            "deletion_auc": area(deletion), "insertion_auc": area(insertion)}


def _rank_correlation(a, b):
    """Spearman's correlation of two flat arrays (ties broken by position)."""
    ra = jnp.argsort(jnp.argsort(a)).astype(jnp.float32)
    rb = jnp.argsort(jnp.argsort(b)).astype(jnp.float32)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return jnp.sum(ra * rb) / jnp.sqrt(jnp.sum(ra * ra) * jnp.sum(rb * rb))


def attribution_drift(key, apply_fn: Callable, params, images, targets, *, corruption: str,
                      levels, steps: int = 32, method: str = "saliency",
                      indices=None) -> dict:
    """How far attribution maps move as a corruption grows, for all levels at once.

    For every level, each image is corrupted (key per image and level), its map is
    computed for the same target, and compared with the clean image's map: SSIM of the
    maps (each scaled to [0, 1] by its maximum magnitude) and Spearman rank correlation
    of the pixel magnitudes (channels summed). Two compiled calls: every corrupted copy
    (`L x` the images in memory), then the maps a level at a time in a program that
    depends on the model, not the corruption (compiled once per model and shape).

    Args:
        key: PRNG key for the corruption.
        images: `(N, H, W, C)`; targets: `(N,)`.
        corruption: a registered corruption name.
        levels: `(L,)` levels of that corruption.
        method: `saliency` (absolute gradient) or `ig` (`steps` Gauss-Legendre steps).
        indices: `(N,)` the images' indices for their random keys (default
            `arange(N)`); a part of a data set passes its own, so that it draws as
            the whole set would (`attribution.streamed`).

    Returns:
        `{"levels": (L,), "ssim": (L, N), "rank_correlation": (L, N)}`.
    """
    from jaxrobust import corruptions

    images, targets = _check(images, targets, "attribution_drift")
    if method not in ("saliency", "ig"):
        raise ValueError(f"method must be saliency or ig, got {method!r}.")
    kernel = corruptions.get(corruption).apply
    if isinstance(levels, jax.core.Tracer):
        values = levels = jnp.asarray(levels, jnp.float32)
    else:  # the sweep's encoding: the median's float radii as exact footprints
        values = jnp.asarray(levels, jnp.float32)
        levels = jnp.asarray(corruptions.kernel_levels(corruption, np.asarray(levels)))
    indices = jnp.arange(images.shape[0]) if indices is None else indices
    corrupted = _corrupt_levels(kernel, key, images, levels, indices)
    scores, ranks = _drift_scores(apply_fn, method, steps, params, images, corrupted,
                                  targets)
    return {"levels": values, "ssim": scores, "rank_correlation": ranks}


# Two programs, not one: the corruption's is small, and the maps' (the model's backward
# pass, the slow compile) depends on the model only, so every corruption of a model
# shares it (the main job's drift: one big compile per model, not per curve).
@functools.partial(jax.jit, static_argnums=0)
def _corrupt_levels(kernel, key, images, levels, indices):
    """`(L, N, H, W, C)`: every image at every level, image `i` at step `s` drawing with
    `item_keys(key, indices, s)`."""
    def at(step_level):
        step, level = step_level
        keys = _prng.item_keys(key, indices, step)
        return jax.vmap(kernel, in_axes=(0, 0, None))(keys, images, level)

    return jax.lax.map(at, (jnp.arange(levels.shape[0]), levels))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _drift_scores(apply_fn, method, steps, params, images, corrupted, targets):
    """`(ssim (L, N), rank correlation (L, N))` of each level's maps against the clean
    maps; one level's maps at a time."""
    clean = _magnitude_map(apply_fn, params, images, targets, method, steps)
    return jax.lax.map(lambda x: _map_similarity(
        clean, _magnitude_map(apply_fn, params, x, targets, method, steps)), corrupted)


def _magnitude_map(apply_fn, params, x, targets, method, steps):
    """Channel-summed |map| scaled to [0, 1] per image: `(N, H, W, 1)`."""
    if method == "ig":
        maps = integrated_gradients(apply_fn, params, x, targets, steps=steps)
    else:
        maps = saliency(apply_fn, params, x, targets)
    mag = jnp.abs(maps).sum(-1, keepdims=True)
    return mag / jnp.maximum(mag.max(axis=(1, 2, 3), keepdims=True), 1e-12)


def _map_similarity(a, b):
    """SSIM and Spearman rank correlation of two batches of magnitude maps: `(N,)` each."""
    from jaxrobust.metrics import ssim

    return (jax.vmap(ssim)(a, b),
            jax.vmap(lambda u, v: _rank_correlation(u.ravel(), v.ravel()))(a, b))


def layer_order(apply_fn: Callable, params, example) -> list[tuple[str, list[int]]]:
    """The layers of `params`, from the output down, as `(name, leaf indices)`.

    A layer is the group of leaves sharing a parent path (a kernel and its bias, a
    batch norm's scale, offset and statistics). Layers are ordered by where the
    forward pass first uses them, read from the jaxpr of `apply_fn(params, example)`,
    so the order follows the computation rather than the names.
    """
    from jax.extend import core as jcore

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    jaxpr = jax.make_jaxpr(apply_fn)(params, example).jaxpr
    position = {v: i for i, v in enumerate(jaxpr.invars[:len(leaves)])}
    first: dict[int, int] = {}
    for k, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, jcore.Literal) and v in position:
                first.setdefault(position[v], k)
    groups: dict[str, list[int]] = {}
    for i, (path, _) in enumerate(leaves):
        keys = [p for p in path if not isinstance(p, jax.tree_util.GetAttrKey)]
        groups.setdefault(jax.tree_util.keystr(tuple(keys[:-1])), []).append(i)
    use = {name: min(first.get(i, len(jaxpr.eqns)) for i in idx)
           for name, idx in groups.items()}
    return sorted(groups.items(), key=lambda item: -use[item[0]])


def parameter_randomization(key, apply_fn: Callable, params, images, targets, *,
                            method: str = "saliency", steps: int = 32,
                            layers: int | None = None) -> dict:
    """The model-parameter randomisation sanity check, every cascade step in one call.

    Layers are randomised cumulatively from the output down (`layer_order`): step `k`
    has the top `k` layers randomised, by permuting the entries of each of their
    weight tensors (the tensor's distribution is kept, what was learned is lost; batch
    statistics stay positive). At each step the maps of `images` are compared with
    the trained model's: SSIM and Spearman rank correlation of the channel-summed
    magnitudes. A map that explains the model changes as soon as its top layers are
    randomised; one that stays put reflects the input more than the model.

    Args:
        key: PRNG key for the permutations.
        images: `(N, H, W, C)`; targets: `(N,)`.
        method: `saliency` or `ig` (`steps` Gauss-Legendre steps).
        layers: randomise only the top `layers` layers (default all).

    Returns:
        `{"layers": [L names, top first], "ssim": (L, N), "rank_correlation": (L, N)}`.

    References:
        Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    images, targets = _check(images, targets, "parameter_randomization")
    if method not in ("saliency", "ig"):
        raise ValueError(f"method must be saliency or ig, got {method!r}.")
    order = layer_order(apply_fn, params, images[:1])[:layers]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    depth = np.full(len(leaves), len(order))  # randomised from step depth + 1 on
    for d, (_, idx) in enumerate(order):
        depth[idx] = d
    shuffled = [jax.random.permutation(jax.random.fold_in(key, i), jnp.ravel(leaf)).reshape(
        jnp.shape(leaf)) for i, leaf in enumerate(leaves)]
    clean = _magnitude_map(apply_fn, params, images, targets, method, steps)

    def at(k):
        mixed = [jnp.where(d < k, s, leaf) for d, s, leaf in zip(depth, shuffled, leaves,
                                                                 strict=True)]
        p = jax.tree_util.tree_unflatten(treedef, mixed)
        return _map_similarity(clean, _magnitude_map(apply_fn, p, images, targets, method,
                                                     steps))

    scores, ranks = jax.jit(lambda ks: jax.lax.map(at, ks))(jnp.arange(1, len(order) + 1))
    return {"layers": [name for name, _ in order], "ssim": scores, "rank_correlation": ranks}
