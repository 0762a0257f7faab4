"""Gradient attributions on a pure classifier `apply_fn(params, images) -> logits`.

Saliency, gradient x input, SmoothGrad and Integrated Gradients (IG), batched over
images with `vmap` and over IG's path steps in chunks, so memory stays bounded for
large `steps x batch`. Nothing here imports Flax: any JAX model works.

Shapes: `images (N, H, W, C)`, `targets (N,)` int class indices; attributions have
the shape of `images`.

References:
    Simonyan et al., "Deep Inside Convolutional Networks", 2014 (saliency).
    Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017.
    Sundararajan et al., "Axiomatic Attribution for Deep Networks", 2017 (IG).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _prng
from jaxrobust.sharding import local_mesh, shard_batch

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
           "gausslegendre")


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Path points `alphas` in [0, 1] and weights of Captum's quadrature rules.

    Same numbers as `captum.attr._utils.approximation_methods`: Riemann sums with
    `1 / steps` weights (the trapezoid rule halves the two end weights) and
    Gauss-Legendre nodes and weights mapped from [-1, 1] to [0, 1]. Like Captum's,
    the trapezoid weights are `1 / steps` with halved ends, so they sum to
    `1 - 1 / steps` and its completeness error falls only like `1 / steps`; the
    midpoint and Gauss-Legendre rules are the accurate ones.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}.")
    if steps < (1 if method == "gausslegendre" else 2):
        raise ValueError(f"{method} needs at least {1 if method == 'gausslegendre' else 2} "
                         f"steps, got {steps}.")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    n = steps
    weights = np.full(n, 1.0 / n)
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        alphas = np.linspace(0.0, 1.0, n)
    elif method == "riemann_left":
        alphas = np.linspace(0.0, 1.0 - 1.0 / n, n)
    elif method == "riemann_middle":
        alphas = np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n)
    else:
        alphas = np.linspace(1.0 / n, 1.0, n)
    return alphas, weights


def _check(images, targets, fn, *, several: bool = False):
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"{fn}: images must be a batch (N, H, W, C), got shape {images.shape}.")
    targets = jnp.asarray(targets)
    if targets.ndim == 0:
        targets = jnp.broadcast_to(targets, images.shape[:1])
    if several and targets.ndim == 2 and targets.shape[0] == images.shape[0] \
            and (jnp.issubdtype(targets.dtype, jnp.integer)
                 or jnp.issubdtype(targets.dtype, jnp.floating)):
        return images, targets
    if targets.shape != images.shape[:1] or not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"{fn}: targets must be {images.shape[0]} integer class indices, got "
                         f"{targets.dtype} {targets.shape}.")
    return images, targets


def _target_grad(apply_fn, params, x, targets):
    """d logit[target] / d x, one target per row of the batch `x`."""
    def total(x):
        logits = apply_fn(params, x)
        return jnp.sum(jnp.take_along_axis(logits, targets[:, None], axis=1))
    return jax.grad(total)(x)


def target_gradients(apply_fn: Callable, params, x, targets):
    """Gradients of several target logits per image from one forward pass.

    `targets (N, T)` -> `(N, T, H, W, C)`: one forward pass and its VJP, applied to
    the `T` one-hot output cotangents with `vmap` (what Captum does with `T` passes).
    """
    logits, vjp = jax.vjp(lambda x: apply_fn(params, x), x)
    cotangents = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)  # (N, T, K)
    return jax.vmap(lambda c: vjp(c)[0], in_axes=1, out_axes=1)(cotangents)


def _weighted_grad(apply_fn: Callable, params, x, weights):
    """d sum_k weights[n, k] * logits[n, k] / d x: one VJP with `weights` as cotangent."""
    logits, vjp = jax.vjp(lambda x: apply_fn(params, x), x)
    if weights.shape != logits.shape:
        raise ValueError(f"output weights {weights.shape} must match the logits {logits.shape}.")
    return vjp(weights.astype(logits.dtype))[0]


def saliency(apply_fn: Callable, params, images, targets, *, absolute: bool = True):
    """Gradient of each image's target logit with respect to the image.

    With `absolute=True` (Captum's `Saliency` default) the magnitude is returned.
    """
    images, targets = _check(images, targets, "saliency")
    g = _target_grad(apply_fn, params, images, targets)
    return jnp.abs(g) if absolute else g


def gradient_x_input(apply_fn: Callable, params, images, targets):
    """Gradient of the target logit times the input (Captum's `InputXGradient`)."""
    images, targets = _check(images, targets, "gradient_x_input")
    return images * _target_grad(apply_fn, params, images, targets)


def smoothgrad(key, apply_fn: Callable, params, images, targets, *, samples: int = 50,
               noise: float = 0.15, absolute: bool = False):
    """SmoothGrad: the mean gradient over `samples` noisy copies of each image.

    The noise is Gaussian with standard deviation `noise * (max - min)` of each image,
    as in the paper. Samples are processed one batch at a time (`lax.map`).
    """
    images, targets = _check(images, targets, "smoothgrad")
    spread = noise * (jnp.max(images, axis=(1, 2, 3)) - jnp.min(images, axis=(1, 2, 3)))

    def one(k):
        noisy = images + spread[:, None, None, None] * _prng.normal(k, images.shape)
        g = _target_grad(apply_fn, params, noisy, targets)
        return jnp.abs(g) if absolute else g

    return jnp.mean(jax.lax.map(one, jax.random.split(key, samples)), axis=0)


def make_baseline(kind, images, *, key=None, sigma: float = 5.0):
    """An IG baseline for `images (N, H, W, C)`.

    `kind`: None or `"black"` (zeros), `"white"` (ones), `"blur"` (each image under a
    Gaussian blur of `sigma` pixels), `"uniform"` (uniform noise in [0, 1]; needs
    `key`), or an array broadcastable to `images`.
    """
    if kind is None or (isinstance(kind, str) and kind == "black"):
        return jnp.zeros_like(images)
    if isinstance(kind, str):
        if kind == "white":
            return jnp.ones_like(images)
        if kind == "uniform":
            if key is None:
                raise ValueError("the uniform baseline needs a key.")
            return _prng.uniform(key, images.shape, images.dtype)
        if kind == "blur":
            radius = int(3 * sigma + 0.5)
            x = np.arange(-radius, radius + 1)
            taps = np.exp(-0.5 * (x / sigma) ** 2)
            taps = jnp.asarray(taps / taps.sum(), images.dtype)
            pad = jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)),
                          mode="reflect")
            H, W = images.shape[1:3]
            rows = sum(t * pad[:, i:i + H] for i, t in enumerate(taps))
            return sum(t * rows[:, :, i:i + W] for i, t in enumerate(taps))
        raise ValueError(f"unknown baseline {kind!r}; use black, white, blur, uniform or "
                         "an array.")
    return jnp.broadcast_to(jnp.asarray(kind, images.dtype), images.shape)


def auto_chunk(steps: int, batch: int, image_shape, *, budget_bytes: float | None = None,
               activation_factor: float = 64.0) -> int:
    """Path steps per chunk so that `chunk x batch` forward+backward passes fit memory.

    Assumes a pass needs about `activation_factor` times the input's bytes (a small
    CNN's activations and their gradients); the budget defaults to a quarter of the
    device's free memory, or 2 GiB when it cannot be read.
    """
    if budget_bytes is None:
        budget_bytes = 2.0 * 2**30
        try:
            stats = jax.devices()[0].memory_stats() or {}
            free = stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0)
            if free > 0:
                budget_bytes = free / 4
        except Exception:  # noqa: BLE001 - not every backend reports memory
            pass
    per_pass = activation_factor * 4.0 * math.prod(image_shape)
    return int(max(1, min(steps, budget_bytes // max(per_pass * batch, 1.0))))


def integrated_gradients(apply_fn: Callable, params, images, targets, *, baseline=None,
                         steps: int = 50, method: str = "gausslegendre",
                         chunk_size: int | None = None, return_delta: bool = False,
                         key=None, devices: int | None = None):
    """Integrated Gradients, with Captum's quadrature rules.

    `IG_i(x) = (x_i - b_i) * sum_k w_k * d f_t(b + a_k (x - b)) / d x_i`, for the
    path points `a_k` and weights `w_k` of `method` (see `quadrature`). The steps are
    processed `chunk_size` at a time (all images of a chunk's steps in one batched
    forward+backward), so memory is bounded by `chunk_size x N` passes whatever
    `steps` is; `chunk_size=None` picks it with `auto_chunk`.

    Args:
        apply_fn, params: the classifier, `apply_fn(params, (N, H, W, C)) -> (N, K)`.
        images: `(N, H, W, C)`.
        targets: `(N,)` class index per image (or one int for all), or `(N, T)` for
            `T` targets per image, explained from the same forward passes (one VJP
            per target, vmapped); attributions are then `(N, T, H, W, C)`. Or float
            output weights `(N, K)`: explains the weighted sum of the `K` logits in
            one backward pass per step (IG is linear in the explained function, so
            `one_hot(a) - one_hot(b)` gives IG(a) - IG(b)).
        baseline: see `make_baseline` (default black).
        steps: number of path points.
        method: `riemann_left`, `riemann_right`, `riemann_middle`,
            `riemann_trapezoid` or `gausslegendre`.
        chunk_size: path steps per chunk.
        return_delta: also return the completeness error per image,
            `sum(IG) - (f_t(x) - f_t(b))`.
        key: PRNG key for the uniform baseline.
        devices: called with concrete arrays, the images are split over this many
            local devices (default all) with `sharding.shard_batch`; the results
            equal one device's. Inside `jit` the caller's placement is kept.

    Returns:
        Attributions `(N, H, W, C)`, and the deltas `(N,)` with `return_delta`.
    """
    images, targets = _check(images, targets, "integrated_gradients", several=True)
    weighted = jnp.issubdtype(targets.dtype, jnp.floating)
    several = targets.ndim == 2 and not weighted
    base = make_baseline(baseline, images, key=key)
    mesh = None if isinstance(images, jax.core.Tracer) else local_mesh(devices)
    if mesh is not None and mesh.devices.size > 1:  # the image axis over every device
        shard = shard_batch(lambda x, t, b: integrated_gradients(
            apply_fn, params, x, t, baseline=b, steps=steps, method=method,
            chunk_size=chunk_size, return_delta=return_delta), in_axes=(0, 0, 0), mesh=mesh)
        return shard(images, targets, base)
    alphas, weights = quadrature(method, steps)
    n = images.shape[0]
    chunk = chunk_size or auto_chunk(steps, n, images.shape[1:])
    if chunk < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk}.")
    if chunk_size is None:  # balance the chunks so that little padding is computed
        chunk = -(-steps // -(-steps // chunk))
    pad = (-steps) % chunk
    alphas = np.concatenate([alphas, np.zeros(pad)]).reshape(-1, chunk)
    weights = np.concatenate([weights, np.zeros(pad)]).reshape(-1, chunk)  # padding weighs 0
    diff = images - base

    def chunk_sum(carry, aw):
        a, w = aw  # (chunk,)
        x = base[None] + a[:, None, None, None, None] * diff[None]  # (chunk, N, H, W, C)
        x = x.reshape((-1,) + images.shape[1:])
        if weighted:
            g = _weighted_grad(apply_fn, params, x, jnp.tile(targets, (chunk, 1)))
        elif several:
            g = target_gradients(apply_fn, params, x, jnp.tile(targets, (chunk, 1)))
        else:
            g = _target_grad(apply_fn, params, x, jnp.tile(targets, chunk))
        g = g.reshape((chunk,) + carry.shape)
        return carry + jnp.tensordot(w.astype(g.dtype), g, axes=1), None

    path = (jnp.asarray(alphas, images.dtype), jnp.asarray(weights))
    zeros = jnp.zeros((n, targets.shape[1], *images.shape[1:]) if several else images.shape,
                      images.dtype)
    if alphas.shape[0] <= 8:  # few chunks: unrolled (XLA runs a loop body less well)
        total = zeros
        for k in range(alphas.shape[0]):
            total, _ = chunk_sum(total, (path[0][k], path[1][k]))
    else:
        total, _ = jax.lax.scan(chunk_sum, zeros, path)
    attributions = (diff[:, None] if several else diff) * total
    if not return_delta:
        return attributions
    if weighted:
        f = lambda x: jnp.sum(apply_fn(params, x) * targets, axis=1)
    else:
        picks = targets if several else targets[:, None]
        f = lambda x: jnp.take_along_axis(apply_fn(params, x), picks, 1)
    delta = jnp.sum(attributions, axis=(-3, -2, -1)) - (f(images) - f(base)).reshape(
        attributions.shape[:-3])
    return attributions, delta


def deletion_insertion(apply_fn: Callable, params, images, targets, attributions, *,
                       fractions=None, baseline=None, key=None) -> dict:
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
        baseline: see `make_baseline` (default black).

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
    base = make_baseline(baseline, images, key=key)
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
                      levels, steps: int = 32, method: str = "saliency") -> dict:
    """How far attribution maps move as a corruption grows, for all levels in one call.

    For every level, each image is corrupted (key per image and level), its map is
    computed for the same target, and compared with the clean image's map: SSIM of the
    maps (each scaled to [0, 1] by its maximum magnitude) and Spearman rank correlation
    of the pixel magnitudes (channels summed).

    Args:
        key: PRNG key for the corruption.
        images: `(N, H, W, C)`; targets: `(N,)`.
        corruption: a registered corruption name.
        levels: `(L,)` levels of that corruption.
        method: `saliency` (absolute gradient) or `ig` (`steps` Gauss-Legendre steps).

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
    clean = _magnitude_map(apply_fn, params, images, targets, method, steps)
    n = images.shape[0]

    def at(step_level):
        step, level = step_level
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, i), step))(
            jnp.arange(n))
        corrupted = jax.vmap(kernel, in_axes=(0, 0, None))(keys, images, level)
        return _map_similarity(clean, _magnitude_map(apply_fn, params, corrupted, targets,
                                                     method, steps))

    scores, ranks = jax.lax.map(at, (jnp.arange(levels.shape[0]), levels))
    return {"levels": values, "ssim": scores, "rank_correlation": ranks}


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
