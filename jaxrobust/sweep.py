"""The intensity-sweep engine: corrupt -> SSIM -> predict, for every level at once.

For each corruption one compiled program takes a chunk of clean images and every
level of the schedule: `lax.map` walks the levels (bounding memory), `vmap` covers
the chunk's images, and the chunk is split over every local device. Random keys are
per (corruption, image index, step), so results do not depend on the chunk size or
the device count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrobust import corruptions as registry
from jaxrobust.metrics import ssim
from jaxrobust.sharding import shard_batch

TARGETS = ("corruption_type", "labels")


def _check(classifiers, images, labels, corruptions, levels, target):
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}.")
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype.kind != "f":
        raise ValueError(f"images must be float (N, H, W, C) in [0, 1], got {images.dtype} "
                         f"{images.shape}.")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels; pass one label "
                         "per image.")
    if target == "labels" and labels is None:
        raise ValueError("target='labels' needs the images' labels.")
    if not classifiers:
        raise ValueError("no classifiers to sweep.")
    names = [registry.get(c).name for c in corruptions]
    schedule = {}
    for name in names:
        lv = np.asarray(levels[name] if levels and name in levels else
                        registry.seed_levels(name, image_size=images.shape[1]), np.float32)
        top = registry.get(name).max_level(images.shape[1], images.shape[2])
        if lv.ndim != 1 or len(lv) == 0 or lv.min() < 0 or lv.max() > top:
            raise ValueError(f"levels for {name} must be a non-empty list in [0, {top:g}] "
                             f"({registry.get(name).level_meaning}); got {lv.tolist()[:5]}...")
        schedule[name] = lv
    return images, names, schedule


def run(classifiers: Mapping[str, tuple[Callable, object]], images, labels=None, *,
        corruptions=("scale_up", "median_blur", "gaussian_noise"),
        levels: Mapping[str, np.ndarray] | None = None, key: jax.Array,
        class_names: Mapping[str, list[str]] | None = None, batch_size: int = 64,
        target: str = "corruption_type", ssim_threshold: float | None = None,
        out_dir: str | None = None, log: Callable[[str], None] = print):
    """Sweeps every classifier over every (corruption, level).

    Args:
        classifiers: name -> `(apply_fn, params)`, `apply_fn(params, (N, H, W, C)) ->
            logits (N, K)`.
        images: clean `(N, H, W, C)` float images in [0, 1].
        labels: `(N,)` int labels (needed for `target="labels"`).
        corruptions: names (aliases allowed).
        levels: name -> 1-D levels; default the study's schedule scaled to the image.
        key: PRNG key.
        class_names: model name -> its class names; `target="corruption_type"` needs
            each corruption's class (`scale_up`, ...) and `original` among them.
        batch_size: images per chunk (memory bound; results do not depend on it).
        target: `corruption_type` — is the corruption recognised (the study's
            question); `labels` — does the classifier keep the image's label.
        ssim_threshold: the study's "limit value": with `corruption_type`, a
            prediction of `original` also counts as correct when the corrupted image's
            SSIM to the clean one is above this.
        out_dir: if given, `results.csv` and `per_image.npz` are written there.

    Returns:
        `(table, per_image)`: a pandas DataFrame with one row per (model, corruption,
        step) — level, n, accuracy, ssim_mean, ssim_std, confidence, loss — and a dict
        of per-image arrays (`<corruption>/ssim (steps, N)`,
        `<corruption>/<model>/pred (steps, N)`, `.../confidence`, `.../expected`).
    """
    import pandas as pd

    images, names, schedule = _check(classifiers, images, labels, corruptions, levels, target)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    model_names = list(classifiers)
    expected = {}
    for m in model_names:
        classes = (class_names or {}).get(m)
        for name in names:
            if target == "labels":
                expected[m, name] = np.asarray(labels, np.int32)
                continue
            if classes is None or name not in classes:
                raise ValueError(f"model {m!r} has no class {name!r} (its classes: {classes}); "
                                 "sweep with target='labels' or train it on this corruption.")
            expected[m, name] = np.full(len(images), list(classes).index(name), np.int32)
    original = {m: (list((class_names or {}).get(m) or []).index("original")
                    if "original" in ((class_names or {}).get(m) or []) else -1)
                for m in model_names}
    params = tuple(classifiers[m][1] for m in model_names)
    fns = tuple(classifiers[m][0] for m in model_names)
    rows, per_image = [], {}
    n = len(images)
    for c_index, name in enumerate(names):
        kernel = registry.get(name).apply
        lv = jnp.asarray(schedule[name])
        base = jax.random.fold_in(key, c_index)

        def chunk(params, idx, clean, levels, kernel=kernel, base=base):
            # idx (B,), clean (B, H, W, C) -> per level: ssim (B,), probs per model (B, K)
            def one_level(step_level):
                step, level = step_level
                keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, i),
                                                             step))(idx)
                bad = jax.vmap(kernel, in_axes=(0, 0, None))(keys, clean, level)
                scores = jax.vmap(ssim)(clean, bad)
                probs = tuple(jax.nn.softmax(f(p, bad), -1) for f, p in zip(fns, params,
                                                                            strict=True))
                return scores, probs
            steps = jnp.arange(levels.shape[0])
            scores, probs = jax.lax.map(one_level, (steps, levels))
            # batch axis first for the device split: (B, L), (B, L, K)
            return jnp.swapaxes(scores, 0, 1), tuple(jnp.swapaxes(p, 0, 1) for p in probs)

        program = shard_batch(chunk, in_axes=(None, 0, 0, None))
        start = time.perf_counter()
        scores, probs = [], []
        for s in range(0, n, batch_size):
            idx = np.arange(s, min(n, s + batch_size), dtype=np.int32)
            sc, pr = program(params, idx, images[idx], lv)
            scores.append(np.asarray(sc))
            probs.append([np.asarray(p) for p in pr])
            log(f"  sweep {name}: {min(n, s + batch_size)}/{n} images x {len(lv)} levels")
        score = np.concatenate(scores).T  # (L, N)
        per_image[f"{name}/ssim"] = score
        for mi, m in enumerate(model_names):
            prob = np.concatenate([p[mi] for p in probs]).transpose(1, 0, 2)  # (L, N, K)
            pred = prob.argmax(-1)
            exp = expected[m, name]
            correct = pred == exp[None]
            if ssim_threshold is not None and target == "corruption_type" and original[m] >= 0:
                correct |= (pred == original[m]) & (score > ssim_threshold)
            loss = np.asarray(optax.softmax_cross_entropy_with_integer_labels(
                jnp.log(jnp.maximum(prob, 1e-12)), jnp.broadcast_to(exp, pred.shape)))
            per_image[f"{name}/{m}/pred"] = pred.astype(np.int32)
            per_image[f"{name}/{m}/confidence"] = prob.max(-1)
            per_image[f"{name}/{m}/correct"] = correct
            per_image[f"{name}/{m}/expected"] = exp
            for step in range(len(lv)):
                rows.append({"model": m, "corruption": name, "step": step,
                             "level": float(lv[step]), "n": n,
                             "accuracy": float(correct[step].mean()),
                             "ssim_mean": float(score[step].mean()),
                             "ssim_std": float(score[step].std()),
                             "confidence": float(prob[step].max(-1).mean()),
                             "loss": float(loss[step].mean())})
        log(f"  sweep {name}: {len(lv)} levels x {n} images x {len(model_names)} models "
            f"in {time.perf_counter() - start:.1f} s")
    table = pd.DataFrame(rows)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        tmp = os.path.join(out_dir, ".results.csv.tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, os.path.join(out_dir, "results.csv"))
        tmp = os.path.join(out_dir, ".per_image.tmp.npz")
        np.savez_compressed(tmp, **per_image)
        os.replace(tmp, os.path.join(out_dir, "per_image.npz"))
    return table, per_image
