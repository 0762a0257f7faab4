"""Gradient attributions: saliency, gradient x input, SmoothGrad, Integrated Gradients.

Every attribution here is a gradient of a weighted sum of the logits: a target class
`t` is the weight vector `one_hot(t)`, `T` targets per image are `T` weight vectors,
and `output_weights` are used as given. One path computes them all
(`weighted_gradients`): one forward pass, its VJP applied to the `T` cotangents with
`vmap` (what Captum does with `T` passes). IG walks its path steps in chunks, so
memory stays bounded for large `steps x batch`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _prng
from jaxrobust.corruptions import _ops
from jaxrobust.sharding import available_bytes, local_mesh, shard_batch

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


def _check(images, targets, fn):
    """`images (N, H, W, C)` and integer `targets`: `(N,)` (a scalar is broadcast)."""
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"{fn}: images must be a batch (N, H, W, C), got shape {images.shape}.")
    targets = jnp.asarray(targets)
    if targets.ndim == 0:
        targets = jnp.broadcast_to(targets, images.shape[:1])
    if targets.shape != images.shape[:1] or not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"{fn}: targets must be {images.shape[0]} integer class indices, got "
                         f"{targets.dtype} {targets.shape}.")
    return images, targets


def as_output_weights(targets, num_classes: int, *, n: int, weights=None) -> tuple[jax.Array, bool]:
    """Any target form as output weights `(N, T, K)`, and whether `T` is a real axis.

    Args:
        targets: an int (every image), `(N,)` ints (one class per image) or `(N, T)`
            ints (`T` classes per image); or None with `weights`.
        num_classes: `K`, the logits' size.
        n: the number of images `N`.
        weights: float output weights `(N, K)` (one weighted sum of logits per image)
            or `(N, T, K)`; exclusive with `targets`.

    Raises:
        ValueError: both or neither given, float targets, or shapes that do not match.
    """
    if (targets is None) == (weights is None):
        raise ValueError("pass either targets (class indices) or output_weights, not "
                         f"{'both' if weights is not None else 'neither'}.")
    if weights is not None:
        weights = jnp.asarray(weights)
        several = weights.ndim == 3
        if several:
            ok = weights.shape[0] == n and weights.shape[2] == num_classes
        else:
            ok = weights.shape == (n, num_classes)
            weights = weights[:, None]
        if not ok or not jnp.issubdtype(weights.dtype, jnp.floating):
            raise ValueError(f"output_weights must be float ({n}, {num_classes}) or ({n}, T, "
                             f"{num_classes}), got {weights.dtype} {weights.shape}.")
        return weights, several
    targets = jnp.asarray(targets)
    if jnp.issubdtype(targets.dtype, jnp.floating):
        raise ValueError(f"targets must be integer class indices, got {targets.dtype}; float "
                         "weights of the logits go in output_weights=.")
    several = targets.ndim == 2
    if targets.ndim == 0:
        targets = jnp.broadcast_to(targets, (n,))
    if targets.shape[0] != n or targets.ndim > 2 or not jnp.issubdtype(targets.dtype,
                                                                       jnp.integer):
        raise ValueError(f"targets must be {n} integer class indices (or ({n}, T)), got "
                         f"{targets.dtype} {targets.shape}.")
    onehot = jax.nn.one_hot(targets if several else targets[:, None], num_classes)
    return onehot, several


def weighted_gradients(apply_fn: Callable, params, x, weights):
    """`d sum_k weights[n, t, k] logits[n, k] / d x` for every `t`: `(N, T, H, W, C)`.

    One forward pass of `x (N, H, W, C)` and its VJP, applied to the `T` cotangents
    `weights (N, T, K)` with `vmap`.
    """
    logits, vjp = jax.vjp(lambda v: apply_fn(params, v), x)
    if weights.shape[::2] != logits.shape:
        raise ValueError(f"output weights {weights.shape} must match the logits "
                         f"{logits.shape} (as (N, T, K)).")
    return jax.vmap(lambda c: vjp(c)[0], in_axes=1, out_axes=1)(weights.astype(logits.dtype))


def target_gradients(apply_fn: Callable, params, x, targets):
    """Gradients of several target logits per image from one forward pass:
    `targets (N, T)` ints -> `(N, T, H, W, C)` (`weighted_gradients` of their one-hots)."""
    onehot = jax.nn.one_hot(targets, jax.eval_shape(apply_fn, params, x).shape[-1])
    return weighted_gradients(apply_fn, params, x, onehot)


def _target_grad(apply_fn, params, x, targets):
    """d logit[target] / d x, one integer target per row of the batch `x`."""
    return target_gradients(apply_fn, params, x, targets[:, None])[:, 0]


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


def make_baseline(key, kind, images, *, sigma: float = 5.0):
    """An IG baseline for `images (N, H, W, C)`.

    Args:
        key: PRNG key, used by `"uniform"` only (None otherwise).
        kind: None or `"black"` (zeros), `"white"` (ones), `"blur"` (each image under
            a Gaussian blur of `sigma` pixels: `scipy.ndimage.gaussian_filter(...,
            mode="mirror", truncate=3)` per channel), `"uniform"` (uniform noise in
            [0, 1]), or an array broadcastable to `images`.

    Raises:
        ValueError: an unknown kind, or `"uniform"` without a key.
    """
    if kind is None or (isinstance(kind, str) and kind == "black"):
        return jnp.zeros_like(images)
    if isinstance(kind, str):
        if kind == "white":
            return jnp.ones_like(images)
        if kind == "uniform":
            if key is None:
                raise ValueError("the uniform baseline needs a key: make_baseline(key, "
                                 "'uniform', images).")
            return _prng.uniform(key, images.shape, images.dtype)
        if kind == "blur":
            return jax.vmap(lambda im: _ops.gaussian_blur_image(
                im, sigma, sigma, mode="mirror", truncate=3.0))(images).astype(images.dtype)
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
        free = available_bytes(host_fallback=False)
        budget_bytes = 2.0 * 2**30 if free is None else free / 4
    per_pass = activation_factor * 4.0 * math.prod(image_shape)
    return int(max(1, min(steps, budget_bytes // max(per_pass * batch, 1.0))))


def integrated_gradients(apply_fn: Callable, params, images, targets=None, *,
                         output_weights=None, baseline=None, steps: int = 50,
                         method: str = "gausslegendre", chunk_size: int | None = None,
                         return_delta: bool = False, devices: int | None = None):
    """Integrated Gradients, with Captum's quadrature rules.

    `IG_i(x) = (x_i - b_i) * sum_k w_k * d F(b + a_k (x - b)) / d x_i`, for the path
    points `a_k` and weights `w_k` of `method` (see `quadrature`) and the explained
    output `F`: a target logit, or a weighted sum of logits. The steps are processed
    `chunk_size` at a time (all images of a chunk's steps in one batched
    forward+backward), so memory is bounded by `chunk_size x N` passes whatever
    `steps` is; `chunk_size=None` picks it with `auto_chunk`. Equals Captum's
    `IntegratedGradients(...).attribute(x, baselines=b, target=t, n_steps=steps,
    method=method)` (tested).

    Args:
        apply_fn, params: the classifier, `apply_fn(params, (N, H, W, C)) -> (N, K)`.
        images: `(N, H, W, C)`.
        targets: integer classes: one for all, `(N,)`, or `(N, T)` for `T` targets per
            image, explained from the same forward passes; attributions are then
            `(N, T, H, W, C)`.
        output_weights: instead of `targets`, float `(N, K)` weights of the logits:
            explains `sum_k weights[n, k] logits[n, k]` (IG is linear in the explained
            function, so `one_hot(a) - one_hot(b)` gives IG(a) - IG(b)); or
            `(N, T, K)`.
        baseline: see `make_baseline` (default black): a kind or an array; a uniform
            baseline is an array made with a key, `make_baseline(key, "uniform", x)`.
        steps: number of path points.
        method: `riemann_left`, `riemann_right`, `riemann_middle`,
            `riemann_trapezoid` or `gausslegendre`.
        chunk_size: path steps per chunk.
        return_delta: also return the completeness error per image (and target),
            `sum(IG) - (F(x) - F(b))`.
        devices: split the images over this many local devices (`sharding.
            shard_batch`), eager or under `jit` alike; None keeps the caller's
            placement. Results equal one device's.

    Returns:
        Attributions `(N, H, W, C)` (or `(N, T, H, W, C)`), and the deltas `(N,)` (or
        `(N, T)`) with `return_delta`.

    Raises:
        ValueError: bad shapes, float `targets`, both or neither of `targets` and
            `output_weights`, an unknown method or baseline.
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"integrated_gradients: images must be a batch (N, H, W, C), got "
                         f"shape {images.shape}.")
    if isinstance(baseline, str) and baseline == "uniform":
        raise ValueError("the uniform baseline is random: pass baseline=make_baseline(key, "
                         "'uniform', images).")
    num_classes = jax.eval_shape(apply_fn, params, images[:1]).shape[-1]
    weights, several = as_output_weights(targets, num_classes, n=images.shape[0],
                                         weights=output_weights)
    base = make_baseline(None, baseline, images)
    quadrature(method, steps)  # checks the method and steps
    chunk = chunk_size or auto_chunk(steps, images.shape[0], images.shape[1:])
    if chunk < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk}.")
    if chunk_size is None:  # balance the chunks so that little padding is computed
        chunk = -(-steps // -(-steps // chunk))
    program = _ig_program(apply_fn, steps, method, chunk, return_delta, devices)
    out = program(params, images, weights, base)
    if several:
        return out
    return jax.tree.map(lambda a: a[:, 0], out)


@functools.lru_cache(maxsize=64)
def _ig_program(apply_fn, steps, method, chunk, return_delta, devices):
    """IG's compiled program for one model and path, kept like the sweep's:
    `(params, images, weights (N, T, K), baseline) -> (N, T, H, W, C)` [, `(N, T)`]."""
    alphas, path_weights = quadrature(method, steps)
    pad = (-steps) % chunk
    alphas = np.concatenate([alphas, np.zeros(pad)]).reshape(-1, chunk)
    path_weights = np.concatenate([path_weights, np.zeros(pad)]).reshape(-1, chunk)  # weigh 0

    def ig(params, images, weights, base):
        diff = images - base
        n, shape = images.shape[0], images.shape[1:]

        def chunk_sum(total, aw):
            a, w = aw  # (chunk,)
            x = (base[None] + a[:, None, None, None, None] * diff[None]).reshape((-1,) + shape)
            g = weighted_gradients(apply_fn, params, x, jnp.tile(weights, (chunk, 1, 1)))
            g = g.reshape((chunk,) + total.shape)  # (chunk, N, T, H, W, C)
            return total + jnp.tensordot(w.astype(g.dtype), g, axes=1), None

        path = (jnp.asarray(alphas, images.dtype), jnp.asarray(path_weights))
        total = jnp.zeros((n, weights.shape[1]) + shape, images.dtype)
        if alphas.shape[0] <= 8:  # few chunks: unrolled (XLA runs a loop body less well)
            for k in range(alphas.shape[0]):
                total, _ = chunk_sum(total, (path[0][k], path[1][k]))
        else:
            total, _ = jax.lax.scan(chunk_sum, total, path)
        attributions = diff[:, None] * total
        if not return_delta:
            return attributions
        f = lambda x: jnp.einsum("nk,ntk->nt", apply_fn(params, x), weights)
        return attributions, jnp.sum(attributions, axis=(-3, -2, -1)) - (f(images) - f(base))

    if devices is None:
        return jax.jit(ig)
    return shard_batch(ig, in_axes=(None, 0, 0, 0), mesh=local_mesh(devices))
