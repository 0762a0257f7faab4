"""Image-quality metrics: SSIM (scikit-image-compatible) and PSNR.

Both take one pair of `(H, W, C)` float images and return a scalar, so that
`jax.vmap` gives one value per pair, as dm-pix does.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust._fusion import separately
from jaxrobust._validation import check_image
from jaxrobust.corruptions._ops import scipy_gaussian_taps


def _valid_filter(taps, fn, *args):
    """Separable 'valid' correlation of `fn(*args)`, `(..., H, W)`, with 1-D `taps` on H
    and W.

    The row pass is computed apart (`_fusion.separately`): fused, XLA would recompute
    it for every column tap (`n**2` instead of `2 n` multiply-adds per pixel). `fn`
    (a centring, a product of two images) runs inside that pass, so its result is
    never written out. The column pass is left to fuse into the caller's arithmetic.
    Call it once per moment, not on a stack of them: the stack is one more large array
    written and read.
    """
    n = len(taps)
    H, W = args[0].shape[-2] - n + 1, args[0].shape[-1] - n + 1

    def row_pass(*args):
        x = fn(*args)
        return sum(float(t) * x[..., i: i + H, :] for i, t in enumerate(taps))

    rows = separately(row_pass, *args)
    return sum(float(t) * rows[..., i: i + W] for i, t in enumerate(taps))


def _pair(fn, a, b):
    a = check_image(a, fn=fn)
    b = check_image(b, fn=fn)
    if a.shape != b.shape:
        raise ValueError(f"{fn}: images differ in shape, {a.shape} vs {b.shape}.")
    return a.astype(jnp.float32), b.astype(jnp.float32)


def _ssim_taps(shape, win_size, gaussian_weights, sigma):
    """The filter taps and window side of `ssim`'s options, checked against `shape`.

    Raises skimage's errors for its invalid options (negative sigma, an even window,
    a window larger than the image).
    """
    if sigma < 0:
        raise ValueError(f"ssim: sigma must be positive, got {sigma} (skimage raises "
                         "the same).")
    if gaussian_weights:
        taps = scipy_gaussian_taps(sigma, 3.5)
        if win_size is None:
            win_size = len(taps)
    else:
        if win_size is None:
            win_size = 7
        taps = np.full((win_size,), 1.0 / win_size)
    if win_size % 2 != 1 or win_size < 3:
        raise ValueError(f"ssim: win_size must be odd and at least 3, got {win_size}.")
    if min(shape[0], shape[1]) < win_size:
        raise ValueError(
            f"ssim: images of shape {shape} are smaller than the {win_size}-pixel "
            "window; pass a smaller odd win_size."
        )
    return taps, win_size


def _check_constants(k1, k2):
    for name, k in (("K1", k1), ("K2", k2)):
        if k < 0:
            raise ValueError(f"ssim: {name} must be positive, got {k} (skimage raises the "
                             "same).")


def _ssim_crop(x, taps, win_size):
    """`(H, W, C)` -> `(C, H', W')` float32 (`(H', W')` for one channel) and its mean
    (SSIM centres on it).

    Only the interior (a border of `(win_size - 1) // 2` cropped) enters SSIM's mean.
    A 'valid' filter over the returned array gives exactly that interior: with taps
    shorter than the window the extra margin is cropped first; with taps longer than
    the window (`gaussian_weights` with a small explicit `win_size`) the image is
    padded by the difference with scipy's 'reflect' rule (NumPy's 'symmetric'), which
    is what skimage's gaussian filter sees there. Centring on the image's own mean
    changes no covariance and loses less to float32 cancellation.
    """
    extra = (len(taps) - win_size) // 2
    if extra > 0:
        x = jnp.pad(x, ((extra, extra), (extra, extra), (0, 0)), mode="symmetric")
    elif extra < 0:
        x = x[-extra:extra, -extra:extra]
    # one channel as (H', W'): a (1, H', W') plane's unit axis let XLA's CPU layouts
    # disagree between the consumers, and each disagreement cost a copy per image
    planes = x[..., 0] if x.shape[-1] == 1 else jnp.moveaxis(x, -1, 0)
    return planes, jnp.mean(x)


def ssim_reference(
    a: jax.typing.ArrayLike,
    *,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
) -> dict:
    """The half of `ssim(a, b)` that depends on `a` alone, to compare many `b` with one `a`.

    `ssim_compare(ssim_reference(a), b)` equals `ssim(a, b)` (same options); a sweep
    computes each clean image's reference once and compares every corrupted version
    with it, filtering three local moments per pair instead of five.

    Args:
        a: `(H, W, C)` float image.
        win_size, gaussian_weights, sigma, use_sample_covariance: as for `ssim`.

    Returns:
        A dict of arrays (vmappable): `"centred"` `(C, H', W')` (`(H', W')` for one
        channel), the image minus its mean `"shift"` and cropped to where the filter is
        valid; `"mean"` and `"var"`, its centred local mean and its local variance,
        `(C, H' - n + 1, W' - n + 1)` (or without `C`) for `n` taps.
    """
    a = check_image(a, fn="ssim").astype(jnp.float32)
    taps, win_size = _ssim_taps(a.shape, win_size, gaussian_weights, sigma)
    a, shift = _ssim_crop(a, taps, win_size)
    da = a - shift
    mx, sxx = _valid_filter(taps, _same, da), _valid_filter(taps, _square, da)
    return {"centred": da, "shift": shift, "mean": mx,
            "var": _cov_norm(win_size, use_sample_covariance) * (sxx - mx * mx)}


def _same(x):
    return x


def _square(x):
    return x * x


def _cov_norm(win_size, use_sample_covariance):
    npix = win_size**2
    return npix / (npix - 1) if use_sample_covariance else 1.0


def ssim_compare(
    reference: dict,
    b: jax.typing.ArrayLike,
    *,
    data_range: float = 1.0,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """`ssim(a, b)` from `reference = ssim_reference(a)` (same options): a float32 scalar."""
    _check_constants(k1, k2)
    b = check_image(b, fn="ssim").astype(jnp.float32)
    taps, win_size = _ssim_taps(b.shape, win_size, gaussian_weights, sigma)
    da = reference["centred"]
    b, shift = _ssim_crop(b, taps, win_size)
    if da.shape != b.shape:
        raise ValueError(f"ssim: images differ in shape, reference {da.shape} vs "
                         f"{b.shape} ((C, H, W), or (H, W) for one channel, as cropped "
                         "for the window).")
    # b centred on its mean inside each moment's row pass (never stored)
    my = _valid_filter(taps, lambda b, s: b - s, b, shift)
    syy = _valid_filter(taps, lambda b, s: _square(b - s), b, shift)
    sxy = _valid_filter(taps, lambda a, b, s: a * (b - s), da, b, shift)
    mx, vx = reference["mean"], reference["var"]
    cov_norm = _cov_norm(win_size, use_sample_covariance)
    vy = cov_norm * (syy - my * my)
    vxy = cov_norm * (sxy - mx * my)
    ux, uy = mx + reference["shift"], my + shift
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    # the map computed apart from its mean: fused into the reduction, XLA's CPU backend
    # ran the column passes and the formula ~7x slower, on 64 images of 174 x 174
    return jnp.mean(jnp.mean(separately(lambda s: s, s), axis=(-2, -1)))


def ssim(
    a: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike,
    *,
    data_range: float = 1.0,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """Mean structural similarity of one image pair, as scikit-image computes it.

    Equals `skimage.metrics.structural_similarity(a, b, data_range=data_range,
    channel_axis=-1, win_size=..., gaussian_weights=..., sigma=...,
    use_sample_covariance=...)` to about 1e-6: per channel, local means, variances and
    covariance under a `win_size` box window (or a Gaussian of `sigma`, truncated at
    3.5 sigma, 11 taps by default), sample-covariance normalisation `NP / (NP - 1)`
    with `NP = win_size**2`, the SSIM map averaged away from a border of
    `(win_size - 1) // 2` pixels, then the mean over channels. Every option
    combination skimage accepts agrees, including `gaussian_weights` with an explicit
    `win_size` (the Gaussian keeps its 3.5-sigma taps, reflected at the border, and
    `win_size` sets the crop and `NP`); skimage's invalid options raise here too
    (negative `sigma`, `k1` or `k2`; an even window; a window larger than the image).
    `data_range=2` is what skimage 0.16-0.18 took for float images when none was
    given (the dtype range of floats, -1 .. 1): the corruption study's SSIM.

    `dm_pix.ssim` differs: it has no sample-covariance correction, and it always
    filters with its own Gaussian over the 'valid' region, so its numbers are not
    scikit-image's; this function is the reference-compatible one.

    Args:
        a, b: `(H, W, C)` float images of the same shape.
        data_range: value range of the images (1.0 for images in [0, 1]).
        win_size: odd window side; 7 by default, or `2 * int(3.5 * sigma + 0.5) + 1`
            with `gaussian_weights`.
        gaussian_weights: weight the window with a Gaussian instead of a box.
        sigma: the Gaussian's standard deviation.
        use_sample_covariance: normalise by `NP - 1` instead of `NP`.
        k1, k2: SSIM's stabilising constants (skimage's `K1`, `K2`).

    Returns:
        A float32 scalar; 1.0 for identical images.

    Raises:
        ValueError: images of different shapes or not `(H, W, C)` float, or an
            option skimage rejects.
    """
    _check_constants(k1, k2)
    a, b = _pair("ssim", a, b)
    shape = dict(win_size=win_size, gaussian_weights=gaussian_weights, sigma=sigma,
                 use_sample_covariance=use_sample_covariance)
    return ssim_compare(ssim_reference(a, **shape), b, data_range=data_range, k1=k1, k2=k2,
                        **shape)


def psnr(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike, *, data_range: float = 1.0):
    """Peak signal-to-noise ratio in dB of one image pair.

    Equals `skimage.metrics.peak_signal_noise_ratio(a, b, data_range=data_range)`;
    computed with `dm_pix.psnr` on images scaled to [0, 1]. Identical images give inf.

    Args:
        a, b: `(H, W, C)` float images of the same shape.
        data_range: value range of the images.

    Returns:
        A float32 scalar.
    """
    a, b = _pair("psnr", a, b)
    return dm_pix.psnr(a / data_range, b / data_range)


# ----------------------------------------------------------------------------------
# Robustness summaries of a sweep (NumPy; they run once on small tables).
# ----------------------------------------------------------------------------------


def area_under_curve(levels, accuracy) -> float:
    """Area under the accuracy-level curve, with levels rescaled to [0, 1] (1 = always right)."""
    levels, accuracy = np.asarray(levels, np.float64), np.asarray(accuracy, np.float64)
    span = levels.max() - levels.min()
    if span == 0:
        return float(accuracy.mean())
    x = (levels - levels.min()) / span
    return float(np.sum((x[1:] - x[:-1]) * (accuracy[1:] + accuracy[:-1]) / 2.0))


def relative_auc(levels, accuracy, *, clean: float):
    """`area_under_curve / clean`: 1 = as accurate at every level as on clean images.

    Returns a float, or a sentence saying why it is undefined (clean accuracy 0 or
    missing).
    """
    if clean is None or not np.isfinite(clean):
        return "undefined: no clean accuracy to compare with"
    if clean == 0:
        return "undefined: the clean accuracy is 0"
    return area_under_curve(levels, accuracy) / float(clean)


def _direction(direction: str) -> None:
    if direction not in ("falls", "rises"):
        raise ValueError(f"direction must be 'falls' or 'rises', got {direction!r}.")


def _first_crossing(axis, accuracy, clean, fraction, direction, *, descending: bool):
    """Steps ordered along `axis`, and the first whose accuracy crosses `fraction * clean`.

    Returns `(axis, accuracy, threshold, index or None)`, ordered ascending (or
    descending), or the sentence saying why there is no threshold.
    """
    _direction(direction)
    if clean is None or not np.isfinite(clean):
        return "undefined: no clean accuracy to compare with"
    if clean <= 0:
        return "undefined: the clean accuracy is 0, so there is no threshold to cross"
    axis = np.asarray(axis, np.float64)
    accuracy = np.asarray(accuracy, np.float64)
    order = np.argsort(-axis if descending else axis, kind="stable")
    axis, accuracy = axis[order], accuracy[order]
    threshold = fraction * float(clean)
    hit = accuracy < threshold if direction == "falls" else accuracy >= threshold
    found = np.nonzero(hit)[0]
    return axis, accuracy, threshold, (int(found[0]) if len(found) else None)


def _never(direction, fraction, clean, where: str) -> str:
    verb = "falls below" if direction == "falls" else "reaches"
    return (f"none: accuracy never {verb} {fraction:g} x the clean accuracy "
            f"{float(clean):.3g} {where}")


def critical_level(levels, accuracy, *, clean: float, fraction: float = 0.5,
                   direction: str = "falls"):
    """The first level (levels ascending) where accuracy crosses `fraction * clean`.

    `direction="falls"`: the first level whose accuracy is below `fraction` of the
    clean accuracy (a label classifier losing its labels). `"rises"`: the first level
    whose accuracy reaches it (a corruption-type classifier that starts to recognise
    the corruption; at the identity level it cannot). `clean` is the accuracy on the
    clean images (never a sweep step: step 0 may be the identity corruption).

    Returns:
        The level as a float, or a sentence saying that accuracy never crosses the
        threshold, or why there is no threshold (no clean accuracy, or 0).
    """
    found = _first_crossing(levels, accuracy, clean, fraction, direction, descending=False)
    if isinstance(found, str):
        return found
    levels, _, _, i = found
    if i is not None:
        return float(levels[i])
    return _never(direction, fraction, clean, f"over levels {levels[0]:g} .. {levels[-1]:g}")


def critical_ssim(ssim_values, accuracy, *, clean: float, fraction: float = 0.5,
                  direction: str = "falls"):
    """The SSIM at which accuracy crosses `fraction * clean`, interpolated.

    The steps are ordered from the most similar (highest SSIM) to the least; between
    the last step on the clean side of the threshold and the first past it, the SSIM
    is interpolated linearly in accuracy. `direction` as for `critical_level`. A
    summary that no reference has: it says how much structure a corruption may
    destroy before the classifier's accuracy crosses the threshold, comparable across
    corruptions whose levels are in different units.

    Returns:
        The SSIM as a float, or a sentence saying why there is none.
    """
    found = _first_crossing(ssim_values, accuracy, clean, fraction, direction,
                            descending=True)
    if isinstance(found, str):
        return found
    s, acc, threshold, i = found
    if i is None:
        return _never(direction, fraction, clean, f"down to SSIM {s[-1]:.3g}")
    if i == 0:
        return float(s[0])
    a0, a1 = acc[i - 1], acc[i]
    t = (threshold - a0) / (a1 - a0) if a1 != a0 else 1.0
    return float(s[i - 1] + t * (s[i] - s[i - 1]))


def accuracy_by_ssim(ssim_values, correct, *, bins=10) -> list[dict]:
    """Accuracy of the corrupted images grouped by their SSIM to the clean image."""
    s = np.asarray(ssim_values, np.float64).ravel()
    c = np.asarray(correct, np.float64).ravel()
    edges = np.linspace(min(0.0, s.min()), 1.0, bins + 1) if np.isscalar(bins) else np.asarray(bins)
    which = np.clip(np.digitize(s, edges) - 1, 0, len(edges) - 2)
    return [{"ssim_low": float(edges[b]), "ssim_high": float(edges[b + 1]),
             "n": int(np.sum(which == b)),
             "accuracy": float(c[which == b].mean()) if np.any(which == b) else None}
            for b in range(len(edges) - 1)]


def bootstrap_interval(correct, *, samples: int = 1000, level: float = 0.95, seed: int = 0):
    """Bootstrap confidence interval of the accuracy of each row of `correct (L, N)`.

    Images are resampled with replacement; returns `(low, high)` arrays of shape `(L,)`.
    """
    correct = np.asarray(correct, np.float64)
    rng = np.random.default_rng(seed)
    n = correct.shape[-1]
    draws = rng.integers(0, n, (samples, n))
    means = correct[..., draws].mean(-1)  # (L, samples)
    alpha = (1.0 - level) / 2.0
    return np.quantile(means, alpha, axis=-1), np.quantile(means, 1.0 - alpha, axis=-1)


#: AlexNet's ImageNet-C error per corruption, averaged over severities 1..5, as
#: published: Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness
#: to Common Corruptions and Perturbations", the AlexNet errors that normalise its
#: Table 1 (also AugMix's `imagenet.py`, `ALEXNET_ERR`).
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
#: AlexNet's clean ImageNet top-1 error: 1 - 0.56522 (torchvision's AlexNet, the model
#: the paper evaluated; its Table 1 prints 43.5).
ALEXNET_CLEAN_ERROR = 0.43478


def accuracy_at_severities(rows, corruption: str, *, benchmark: str = "imagenet",
                           image_size: int | None = None) -> list[float | None]:
    """One model's swept accuracy on `corruption` at severities 1..5 of `benchmark`:
    the `rows` (a sweep table's, with `level` and `accuracy`) whose level is the
    table's level there (`corruptions.severity(..., image_size=image_size)`), None
    where none was swept."""
    from jaxrobust import corruptions

    want = corruptions.severity(corruption, [1, 2, 3, 4, 5], table=benchmark,
                                image_size=image_size)
    levels = rows["level"].to_numpy(np.float64)
    out = []
    for level in want:
        hit = np.isclose(levels, level, rtol=1e-5, atol=1e-7)
        out.append(float(rows["accuracy"].to_numpy()[hit][0]) if hit.any() else None)
    return out


def _severity_errors(rows, corruption: str, benchmark: str):
    """Errors `(5,)` of one model on `corruption` at the benchmark's severities 1..5,
    or a sentence naming the first one missing."""
    accuracy = accuracy_at_severities(rows, corruption, benchmark=benchmark)
    if None in accuracy:
        s = accuracy.index(None) + 1
        return (f"undefined: {corruption} was not swept at {benchmark} severity {s}; "
                "sweep its severities 1..5")
    return 1.0 - np.asarray(accuracy)


def corruption_errors(table, *, baseline: str | None, clean_accuracy: dict | None = None,
                      benchmark: str = "imagenet") -> dict:
    """mCE and relative mCE of every model (Hendrycks & Dietterich, 2019).

    Three normalisations, by `baseline`:

    * a swept model's name: `CE_c = sum_s E(model, c, s) / sum_s E(baseline, c, s)`
      over the swept steps `s`, with `E` the error rate; relative `CE_c = sum_s
      (E(model, c, s) - E_clean(model)) / sum_s (E(baseline, c, s) -
      E_clean(baseline))`. The baseline's own mCE and relative mCE are 1.
    * `"alexnet"` (ImageNet-C as published): `CE_c = mean_s E(model, c, s) /
      ALEXNET_ERRORS[c]` over severities 1..5 of the `imagenet` table, relative `CE_c =
      (mean_s E - E_clean(model)) / (ALEXNET_ERRORS[c] - ALEXNET_CLEAN_ERROR)`; the
      mean over the 15 corruptions that have a published AlexNet error (others are
      left out, and `"corruptions"` lists those averaged). 1.0 is the paper's 100.
    * None (unnormalised, e.g. CIFAR-10-C, which has no AlexNet baseline): `CE_c =
      mean_s E(model, c, s)` over severities 1..5 of `benchmark`'s table, relative
      `CE_c = mean_s E - E_clean(model)`.

    mCE and relative mCE average over corruptions. `E_clean` comes from
    `clean_accuracy` (the accuracy on clean images), never from a sweep step. The
    severity-based forms need the table's rows at the benchmark's levels for
    severities 1..5 (`corruptions.severity(c, s, table=benchmark)`; e.g. the default
    sweep's severities 0, 0.25, .., 5 hold them).

    Args:
        table: the sweep's table (model, corruption, step, level, accuracy).
        baseline: a swept model, `"alexnet"`, or None.
        clean_accuracy: model -> accuracy on the clean images.
        benchmark: the corruption table swept (`corruptions.tables.BENCHMARKS`).

    Returns:
        `{model: {"mCE", "relative_mCE", "CE": {corruption: ...}, "relative_CE": {...},
        "corruptions": [...]}}`; a value that is undefined (the baseline makes no
        error, or its errors equal its clean error, so the ratio divides by zero; a
        missing clean accuracy or severity) is a sentence saying so instead of a number.

    Raises:
        ValueError: `baseline` neither a swept model, "alexnet" nor None; "alexnet"
            with a benchmark other than imagenet.
    """
    models = list(dict.fromkeys(table["model"]))
    if baseline is None or (baseline == "alexnet" and "alexnet" not in models):
        if baseline == "alexnet" and benchmark != "imagenet":
            raise ValueError(f"AlexNet's published errors are ImageNet-C's; for {benchmark} "
                             "use baseline=None (the unnormalised mCE).")
        return _published_errors(table, models, clean_accuracy or {}, benchmark,
                                 alexnet=baseline == "alexnet")
    return _relative_to_model(table, models, baseline, clean_accuracy)


def _mean(values):
    bad = [v for v in values.values() if isinstance(v, str)]
    return bad[0] if bad else float(np.mean(list(values.values())))


def _published_errors(table, models, clean_accuracy, benchmark, *, alexnet: bool) -> dict:
    out = {}
    names = [c for c in dict.fromkeys(table["corruption"])
             if not alexnet or c in ALEXNET_ERRORS]
    if not names:
        raise ValueError("none of the swept corruptions has a published AlexNet error; "
                         f"sweep ImageNet-C's ({', '.join(ALEXNET_ERRORS)}).")
    for m in models:
        clean = clean_accuracy.get(m)
        clean_error = None if clean is None or not np.isfinite(clean) else 1.0 - float(clean)
        ce, rel = {}, {}
        for c in names:
            errors = _severity_errors(table[(table["model"] == m) & (table["corruption"] == c)],
                                      c, benchmark)
            if isinstance(errors, str):
                ce[c] = rel[c] = errors
                continue
            ce[c] = float(errors.mean() / ALEXNET_ERRORS[c]) if alexnet else float(errors.mean())
            if clean_error is None:
                rel[c] = "undefined: no clean accuracy to compare with"
            elif alexnet:
                rel[c] = float((errors.mean() - clean_error)
                               / (ALEXNET_ERRORS[c] - ALEXNET_CLEAN_ERROR))
            else:
                rel[c] = float(errors.mean() - clean_error)
        out[m] = {"mCE": _mean(ce), "relative_mCE": _mean(rel), "CE": ce, "relative_CE": rel,
                  "corruptions": names}
    return out


def _relative_to_model(table, models, baseline, clean_accuracy) -> dict:
    out = {}
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not among the swept models {models}; "
                         "pass one of them, 'alexnet' or None.")

    def clean_error(m):
        value = (clean_accuracy or {}).get(m)
        return None if value is None or not np.isfinite(value) else 1.0 - float(value)

    for m in models:
        ce, rel = {}, {}
        for c in dict.fromkeys(table["corruption"]):
            of = table["corruption"] == c
            err = 1.0 - table[(table["model"] == m) & of].sort_values("step")["accuracy"].to_numpy()
            base = 1.0 - table[(table["model"] == baseline) & of].sort_values("step")[
                "accuracy"].to_numpy()
            ce[c] = (float(err.sum() / base.sum()) if base.sum() > 0 else
                     f"undefined: {baseline} makes no error on {c}")
            if clean_error(m) is None or clean_error(baseline) is None:
                rel[c] = "undefined: no clean accuracy to compare with"
                continue
            den = float((base - clean_error(baseline)).sum())
            rel[c] = (float((err - clean_error(m)).sum()) / den if den != 0 else
                      f"undefined: {baseline}'s errors on {c} sum to its clean error")
        out[m] = {"mCE": _mean(ce), "relative_mCE": _mean(rel), "CE": ce, "relative_CE": rel}
    return out
