"""Attribution-guided edits that make a classifier right (the attribution study).

The study (`seeds/003`) fixed misclassified digits three ways; each is a batched,
jit-compiled function here, on a pure classifier `apply_fn(params, images) -> logits`:

* `ig_difference_edit`: `IG(true) - IG(predicted)` (one IG of the logit difference,
  since IG is linear in the explained function). Of the pixels in the top `fraction`
  by absolute value, positive ones are set to the bright value and negative ones to
  the background. The study used 2 % and fixed two images. *Fails* when the edit
  budget is too small, or when the two classes' evidence cancels.
* `ig_fraction_search`: the same rule on `IG(true)` (or the difference) for many
  fractions at once, returning the smallest that makes the prediction right. The
  study searched by hand and found 28 % and 31 %. *Fails* when no fraction works:
  large edits paint the image white and the model then predicts whatever it says for
  a blob.
* `saliency_edit`: the rule driven by the plain gradient, to reproduce and measure
  the study's failure: behind ReLUs the gradient of a confidently wrong model is
  often exactly zero on most pixels (`vanished` reports that fraction), so the rule
  has nothing to rank and edits fewer pixels than asked.
* `random_flip_search`: invert random pixels (`x -> 1 - x`) one by one until the
  prediction becomes the true label, with many random orders in parallel; the
  study's fallback for an image no attribution could fix. *Fails* when `max_flips`
  is reached; the edits are noise, not a semantic change.

"Top fraction" counts pixels (`round(fraction * H * W)`, channels summed), not
attribution mass as Captum's visualiser does; pixels whose attribution is exactly
zero are never edited. Images already classified right need no edit: they come back
unchanged with `success` true and zero pixels changed.

Shapes: `images (N, H, W, C)` in [0, 1], `true_labels (N,)` int. Every function
returns an `Edit`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _prng, attribution

DEFAULT_FRACTIONS = tuple(np.round(np.arange(1, 61) / 100, 2))  # 1 %, 2 %, ..., 60 %


class Edit(NamedTuple):
    """The outcome of an edit method, one entry per image.

    Attributes:
        images: `(N, H, W, C)` edited images (the original where nothing was edited).
        mask: `(N, H, W)` bool, the pixels the method edited.
        attributions: `(N, H, W, C)` the map that drove the edit (zeros for flips).
        predictions: `(N,)` the classifier's class for the edited images.
        confidences: `(N,)` its softmax probability.
        success: `(N,)` bool, prediction equals the true label.
        fraction: `(N,)` fraction of pixels the rule was asked to edit (for the
            searches, the smallest that succeeded; NaN where none did, and 0 for
            images that were right already); for flips, flips / (H * W).
        pixels_changed: `(N,)` int, pixels edited (`mask.sum()`).
        pixel_fraction: `(N,)` `pixels_changed / (H * W)`.
        l0: `(N,)` int, pixels whose value actually changed.
        l2: `(N,)` Euclidean distance to the original image.
        vanished: `(N,)` fraction of pixels whose attribution is exactly zero (for
            IG this includes every pixel equal to the baseline; NaN for flips).
    """

    images: jax.Array
    mask: jax.Array
    attributions: jax.Array
    predictions: jax.Array
    confidences: jax.Array
    success: jax.Array
    fraction: jax.Array
    pixels_changed: jax.Array
    pixel_fraction: jax.Array
    l0: jax.Array
    l2: jax.Array
    vanished: jax.Array


# ------------------------------------------------------------------ validation


def _check(apply_fn, params, images, true_labels, fn: str):
    images = jnp.asarray(images)
    if images.ndim != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"{fn}: images must be a float batch (N, H, W, C), got "
                         f"{images.dtype} {images.shape}; add a batch or channel axis.")
    labels = np.asarray(true_labels)
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{fn}: true_labels must be {images.shape[0]} integer class indices, "
                         f"got {labels.dtype} {labels.shape}.")
    classes = jax.eval_shape(apply_fn, params, images[:1]).shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{fn}: true_labels must lie in [0, {classes}) for this "
                         f"{classes}-class model, got {labels.min()}..{labels.max()}.")
    return images, jnp.asarray(labels, jnp.int32)


def _check_fractions(fractions, fn: str) -> jax.Array:
    f = np.atleast_1d(np.asarray(fractions, np.float64))
    if f.ndim != 1 or f.size == 0 or not np.all((f > 0) & (f <= 1)):
        raise ValueError(f"{fn}: fractions must lie in (0, 1], got {np.asarray(fractions)}; "
                         "0.02 edits 2 % of the pixels.")
    return jnp.asarray(np.sort(f), jnp.float32)


# ------------------------------------------------------------------ the edit rule


def background_value(images) -> jax.Array:
    """Each image's background: the median of its one-pixel border, per channel.

    `(N, H, W, C) -> (N, 1, 1, C)`.
    """
    images = jnp.asarray(images)
    border = jnp.concatenate([images[:, 0], images[:, -1], images[:, 1:-1, 0],
                              images[:, 1:-1, -1]], axis=1)  # (N, 2H + 2W - 4, C)
    return jnp.median(border, axis=1)[:, None, None, :]


def _ranks(attributions):
    """Per-pixel rank by |attribution| (channels summed), 0 = largest; and the sign."""
    score = attributions.sum(-1)  # (N, H, W)
    n, h, w = score.shape
    flat = jnp.abs(score).reshape(n, h * w)
    rank = jnp.argsort(jnp.argsort(-flat, axis=1, stable=True), axis=1).reshape(n, h, w)
    return rank, score


def _apply_rule(images, rank, score, fraction, bright, background):
    """Edits the top `round(fraction * H * W)` pixels of every image (see `edit`)."""
    h, w = images.shape[1:3]  # fraction: a scalar or one per image
    k = jnp.maximum(jnp.round(jnp.asarray(fraction) * h * w), 1.0)
    k = k[:, None, None] if k.ndim == 1 else k
    mask = (rank < k) & (score != 0)
    value = jnp.where((score > 0)[..., None], bright, background)
    return jnp.where(mask[..., None], value, images), mask


def edit(images, attributions, fraction, *, bright: float = 1.0, background=None):
    """The study's edit rule.

    Of the `round(fraction * H * W)` pixels with the largest |attribution| (channels
    summed), those with positive attribution are set to `bright` and those with
    negative attribution to `background` (default: `background_value`); pixels with
    zero attribution are left alone.

    Args:
        images: `(N, H, W, C)`; attributions: same shape.
        fraction: in (0, 1].
        bright: the value positive pixels get (white).
        background: a scalar or `(N, 1, 1, C)`; default the median border value.

    Returns:
        `(edited (N, H, W, C), mask (N, H, W) bool)`.
    """
    images = jnp.asarray(images)
    attributions = jnp.asarray(attributions)
    if attributions.shape != images.shape:
        raise ValueError(f"edit: attributions {attributions.shape} must have the images' "
                         f"shape {images.shape}.")
    (fraction,) = np.asarray(_check_fractions(fraction, "edit"))
    background = background_value(images) if background is None else background
    rank, score = _ranks(attributions)
    return _apply_rule(images, rank, score, fraction, bright, background)


# ------------------------------------------------------------------ shared core


def _predict(apply_fn, params, x):
    probs = jax.nn.softmax(apply_fn(params, x), axis=-1)
    return jnp.argmax(probs, -1), jnp.max(probs, -1)


def _outcome(apply_fn, params, images, edited, mask, attributions, labels, fraction) -> Edit:
    pred, conf = _predict(apply_fn, params, edited)
    h, w = images.shape[1:3]
    changed = mask.sum((1, 2))
    delta = edited - images
    return Edit(images=edited, mask=mask, attributions=attributions, predictions=pred,
                confidences=conf, success=pred == labels, fraction=fraction,
                pixels_changed=changed, pixel_fraction=changed / (h * w),
                l0=jnp.any(delta != 0, axis=-1).sum((1, 2)),
                l2=jnp.sqrt(jnp.sum(delta ** 2, axis=(1, 2, 3))),
                vanished=jnp.mean(attributions.sum(-1) == 0, axis=(1, 2)))


@functools.partial(jax.jit, static_argnames=("apply_fn", "batch_size"))
def _search(apply_fn, params, images, labels, attributions, fractions, bright, background,
            batch_size):
    """Smallest fraction whose edit makes each image right: all fractions in one call."""
    rank, score = _ranks(attributions)

    def at(f):
        edited, _ = _apply_rule(images, rank, score, f, bright, background)
        return _predict(apply_fn, params, edited)[0] == labels

    ok = jax.lax.map(at, fractions, batch_size=batch_size)  # (F, N)
    right = _predict(apply_fn, params, images)[0] == labels
    found = jnp.any(ok, axis=0)
    chosen = fractions[jnp.argmax(ok, axis=0)]
    # images already right keep their pixels; failures show the largest fraction tried
    use = jnp.where(found, chosen, fractions[-1])
    edited, mask = _apply_rule(images, rank, score, use, bright, background)
    edited = jnp.where(right[:, None, None, None], images, edited)
    mask = mask & ~right[:, None, None]
    fraction = jnp.where(right, 0.0, jnp.where(found, chosen, jnp.nan))
    return _outcome(apply_fn, params, images, edited, mask, attributions, labels, fraction)


@functools.partial(jax.jit, static_argnames=("apply_fn", "kind", "use_difference", "steps",
                                            "method"))
def _attributions(apply_fn, params, images, labels, base, *, kind: str, use_difference: bool,
                  steps: int = 0, method: str = ""):
    """The maps that rank pixels for an edit, one compiled program per (model, kind):
    IG (`kind="ig"`) or the signed gradient (`"gradient"`) of the true class's logit,
    or with `use_difference` of `f_true - f_predicted` (output weights
    `one_hot(true) - one_hot(predicted)`)."""
    if use_difference:
        logits = apply_fn(params, images)
        k = logits.shape[-1]
        weights = jax.nn.one_hot(labels, k) - jax.nn.one_hot(jnp.argmax(logits, -1), k)
        if kind == "ig":
            return attribution.integrated_gradients(apply_fn, params, images,
                                                    output_weights=weights, baseline=base,
                                                    steps=steps, method=method)
        return attribution.weighted_gradients(apply_fn, params, images, weights[:, None])[:, 0]
    if kind == "ig":
        return attribution.integrated_gradients(apply_fn, params, images, labels, baseline=base,
                                                steps=steps, method=method)
    return attribution.saliency(apply_fn, params, images, labels, absolute=False)


def _run_search(fn, apply_fn, params, images, true_labels, attributions_of, fractions, bright,
                background):
    images, labels = _check(apply_fn, params, images, true_labels, fn)
    fractions = _check_fractions(fractions, fn)
    background = background_value(images) if background is None else jnp.broadcast_to(
        jnp.asarray(background, images.dtype), images.shape[:1] + (1, 1) + images.shape[3:])
    attributions = attributions_of(images, labels)
    return _search(apply_fn, params, images, labels, attributions, fractions,
                   jnp.asarray(bright, images.dtype), background,
                   batch_size=int(min(len(fractions), 16)))


# ------------------------------------------------------------------ the methods


def _ig(apply_fn, params, *, use_difference, steps, method, baseline):
    def attributions_of(images, labels):
        base = attribution.make_baseline(None, baseline, images)
        return _attributions(apply_fn, params, images, labels, base, kind="ig",
                             use_difference=use_difference, steps=steps, method=method)
    return attributions_of


def ig_difference_edit(apply_fn: Callable, params, images, true_labels, *,
                       fraction: float = 0.02, bright: float = 1.0, background=None,
                       steps: int = 50, method: str = "gausslegendre", baseline=None) -> Edit:
    """Edits the top `fraction` of pixels by `IG(true) - IG(predicted)`.

    The study's first method (2 %, black baseline). The difference is one IG of the
    logit difference `f_true - f_pred` (float output weights), not two IGs.

    Args:
        apply_fn, params: the classifier.
        images: `(N, H, W, C)` in [0, 1]; true_labels: `(N,)`.
        fraction: pixels to edit, in (0, 1].
        bright, background: see `edit`.
        steps, method, baseline: of `attribution.integrated_gradients`.
    """
    return _run_search("ig_difference_edit", apply_fn, params, images, true_labels,
                       _ig(apply_fn, params, use_difference=True, steps=steps, method=method,
                           baseline=baseline), fraction, bright, background)


def ig_fraction_search(apply_fn: Callable, params, images, true_labels, *,
                       fractions=DEFAULT_FRACTIONS, use_difference: bool = False,
                       bright: float = 1.0, background=None, steps: int = 50,
                       method: str = "gausslegendre", baseline=None) -> Edit:
    """The smallest fraction of `IG(true)`-ranked pixels whose edit fixes each image.

    All `fractions` are tried in one compiled call (edits and forward passes batched
    over fractions and images). `use_difference=True` ranks by `IG(true) -
    IG(predicted)` instead. `Edit.fraction` holds the smallest fraction that worked
    (NaN where none did; the edit shown is then the largest fraction's).
    """
    return _run_search("ig_fraction_search", apply_fn, params, images, true_labels,
                       _ig(apply_fn, params, use_difference=use_difference, steps=steps,
                           method=method, baseline=baseline), fractions, bright, background)


def saliency_edit(apply_fn: Callable, params, images, true_labels, *, fraction: float = 0.02,
                  fractions=None, use_difference: bool = False, bright: float = 1.0,
                  background=None) -> Edit:
    """The edit rule driven by the plain (signed) gradient of the true class's logit.

    With `fractions`, searches them like `ig_fraction_search`. `use_difference=True`
    uses the gradient of `f_true - f_pred`. `Edit.vanished` is the fraction of pixels
    whose gradient is exactly zero: the study's failure mode (ReLU networks, wrong
    and confident), where the rule finds fewer pixels to edit than asked.
    """
    def attributions_of(images, labels):
        return _attributions(apply_fn, params, images, labels, None, kind="gradient",
                             use_difference=use_difference)

    return _run_search("saliency_edit", apply_fn, params, images, true_labels, attributions_of,
                       fraction if fractions is None else fractions, bright, background)


@functools.partial(jax.jit, static_argnames=("apply_fn", "max_flips", "trials", "block"))
def _flips(key, apply_fn, params, images, labels, max_flips, trials, block):
    n, h, w, _ = images.shape

    def order(k):  # position of every pixel in one trial's random order
        return jnp.argsort(jax.random.permutation(k, h * w)).reshape(h, w)

    # trial t of image i draws with fold_in(fold_in(key, i), t)
    keys = jax.vmap(lambda t: _prng.item_keys(key, jnp.arange(n), t), out_axes=1)(
        jnp.arange(trials))  # (N, T)
    ranks = jax.vmap(jax.vmap(order))(keys)  # (N, T, H, W)
    def ok_after(ks):  # (K, N, T): right after the first k flips, for every k of `ks`
        flipped = (ranks[None] < ks[:, None, None, None, None])[..., None]
        x = jnp.where(flipped, 1.0 - images[None, :, None], images[None, :, None])
        pred = _predict(apply_fn, params, x.reshape((-1,) + images.shape[1:]))[0]
        return (pred.reshape(len(ks), n, trials) == labels[None, :, None]) & (
            ks <= max_flips)[:, None, None]

    right = _predict(apply_fn, params, images)[0] == labels
    best = jnp.where(right[:, None], 0, -1) * jnp.ones((n, trials), jnp.int32)

    def cond(state):
        k0, best = state
        return (k0 < max_flips) & jnp.any(best < 0)

    def body(state):
        k0, best = state
        ks = k0 + 1 + jnp.arange(block)
        ok = ok_after(ks)  # (block, N, T)
        hit = jnp.any(ok, axis=0)
        first = ks[jnp.argmax(ok, axis=0)]
        return k0 + block, jnp.where((best < 0) & hit, first, best)

    _, best = jax.lax.while_loop(cond, body, (jnp.int32(0), best))
    found = jnp.any(best >= 0, axis=1)
    flips = jnp.min(jnp.where(best >= 0, best, max_flips + 1), axis=1)
    trial = jnp.argmin(jnp.where(best >= 0, best, max_flips + 1), axis=1)
    flips = jnp.where(found, flips, max_flips)
    rank = ranks[jnp.arange(n), trial]  # (N, H, W)
    mask = rank < flips[:, None, None]
    edited = jnp.where(mask[..., None], 1.0 - images, images)
    fraction = flips / (h * w)
    result = _outcome(apply_fn, params, images, edited, mask, jnp.zeros_like(images), labels,
                      fraction)
    return result._replace(vanished=jnp.full((n,), jnp.nan)), best


def random_flip_search(key, apply_fn: Callable, params, images, true_labels, *,
                       max_flips: int = 300, trials: int = 32, block: int = 8,
                       return_trials: bool = False):
    """Fewest random pixel inversions (`x -> 1 - x`) that make each image right.

    `trials=1` is the attribution study's own method: one random sequence of pixels,
    each turned to its opposite colour, until the model gives the right class. More
    trials is this library's "best of N" extension: N random orders run side by side
    and the one needing the fewest flips is kept.

    Every trial flips the pixels of one random order one at a time; all trials of all
    images advance together, `block` flip counts per compiled step, in one
    `lax.while_loop` that stops once every image has a success (or `max_flips`).
    The order of trial `t` for image `i` comes from `fold_in(fold_in(key, i), t)`,
    so results are reproducible from the key.

    Args:
        key: PRNG key.
        images: `(N, H, W, C)` in [0, 1]; true_labels: `(N,)`.
        max_flips: give up after this many flips.
        trials: random orders tried per image, in parallel (1: the study's single run).
        block: flip counts evaluated per loop step (`block x N x trials` images).
        return_trials: also return `(N, trials)` flips each trial needed (-1: none).

    Returns:
        An `Edit` for the best trial of each image (its `pixels_changed` are the
        flips; the attributions are zeros); with `return_trials`, `(edit, flips)`.
    """
    images, labels = _check(apply_fn, params, images, true_labels, "random_flip_search")
    for name, value in (("max_flips", max_flips), ("trials", trials), ("block", block)):
        if int(value) < 1:
            raise ValueError(f"random_flip_search: {name} must be at least 1, got {value}.")
    max_flips = int(min(max_flips, images.shape[1] * images.shape[2]))
    result, per_trial = _flips(key, apply_fn, params, images, labels, max_flips=max_flips,
                               trials=int(trials), block=int(block))
    return (result, per_trial) if return_trials else result
