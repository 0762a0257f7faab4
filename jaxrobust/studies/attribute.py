"""Attributions of a trained checkpoint on the config's test task: `jaxrobust attribute`."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _io, _prng, _progress

METHODS = ("ig", "smoothgrad", "saliency")
_TITLES = {"ig": "integrated gradients"}


def run(config, checkpoint: str, out_dir: str, *, method: str = "ig", steps: int = 50,
        n: int = 8, log: Callable[[str], None] = print, progress: bool | None = None) -> str:
    """Explains the checkpoint's predictions on `n` test images of the config's task.

    `ig`: Integrated Gradients (black baseline, Gauss-Legendre, `steps` points);
    `smoothgrad`: |gradient| averaged over 50 noisy copies; `saliency`: |gradient| of
    the predicted logit. The target is the predicted class. Writes
    `attributions.npz` (images, attributions, labels, predicted, class_names),
    `attributions.png` (a grid of image and map, captioned with class, level, SSIM and
    prediction) and `report.html` into `out_dir`, together.

    Returns:
        `out_dir`, absolute.

    Raises:
        ValueError: an unknown method, `n < 1`, or a checkpoint whose input shape
            differs from the config's images.
    """
    import pandas as pd

    from jaxrobust import attribution, report, train
    from jaxrobust import config as config_lib
    from jaxrobust.studies.corruption import prepare
    from jaxrobust.studies.folder import output_folder

    if method not in METHODS:
        raise ValueError(f"method {method!r}; use one of {', '.join(METHODS)}.")
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}.")
    apply_fn, params, meta = train.restore(checkpoint)
    _, _, _, task = prepare(config, log=lambda s: None, progress=False)
    if list(task.images.shape[1:]) != meta["input_shape"]:
        raise ValueError(f"checkpoint takes images of shape {meta['input_shape']}, the config's "
                         f"are {list(task.images.shape[1:])}; set data.image_size to match.")
    idx = np.linspace(0, len(task.images) - 1, min(n, len(task.images))).astype(int)
    images, labels = task.images[idx], task.labels[idx]
    targets = np.asarray(jnp.argmax(jax.jit(apply_fn)(params, jnp.asarray(images)), -1))
    explain = {  # (key of the group, images, targets) -> maps; compiled (op by op, a
        # network's forward and backward passes take seconds per call)
        "ig": lambda k, x, t: attribution.integrated_gradients(
            apply_fn, params, x, t, steps=steps, devices=jax.local_device_count()),
        "smoothgrad": functools.partial(jax.jit(lambda p, k, x, t: attribution.smoothgrad(
            k, apply_fn, p, x, t, absolute=True)), params),
        "saliency": functools.partial(jax.jit(lambda p, k, x, t: attribution.saliency(
            apply_fn, p, x, t)), params)}[method]
    group = 8  # images per call: one program for every group, a bar over the groups
    base = _prng.stream(config.seed, "attribute")
    maps = []
    with _progress.bar(total=len(images), desc=f"attribute ({method})", unit="image",
                       progress=progress) as bar:
        for start in range(0, len(images), group):
            part = slice(start, start + group)
            maps.append(np.asarray(explain(jax.random.fold_in(base, start), images[part],
                                           targets[part])))
            bar.update(len(images[part]))
    maps = np.concatenate(maps)
    out_dir = output_folder(out_dir)
    names = meta["class_names"]
    title = _TITLES.get(method, method)
    captions = [f"#{i}: {names[y]}, level {task.levels[i]:.3g}"
                + ("" if task.ssim is None else f", SSIM {task.ssim[i]:.2f}")
                + f"\n-> {names[t]} " + ("(right)" if t == y else "(WRONG)")
                for i, y, t in zip(idx, labels, targets, strict=True)]
    rows = pd.DataFrame({"test image": idx, "true": [names[y] for y in labels],
                         "level": task.levels[idx], "predicted": [names[t] for t in targets],
                         "right": targets == labels,
                         "attribution total": np.abs(maps).sum(axis=(1, 2, 3))})
    with _io.publish(out_dir) as tmp:
        np.savez_compressed(os.path.join(tmp, "attributions.npz"), images=images,
                            attributions=maps, labels=labels, predicted=targets,
                            class_names=np.asarray(names))
        figure = report.plot_saliency_grid(images, maps, captions,
                                           os.path.join(tmp, "attributions.png"),
                                           method=title)
        report.write_report(
            os.path.join(tmp, "report.html"),
            title=f"jaxrobust: {title} of {meta['model']}",
            figures=[(figure, f"{title} of the predicted class: each test-task image beside "
                              "its map (|map| summed over channels, scaled to its maximum)")],
            tables=[("Explained images", rows)], summary={},
            config={k: v for k, v in config_lib.to_dict(config).items()
                    if k in ("data", "task", "seed")},
            overview=[("Checkpoint", checkpoint),
                      ("Model", f"{meta['model']}, classes {', '.join(names)}"),
                      ("Method", f"{title}" + (f", {steps} steps (Gauss-Legendre, black "
                                               "baseline)" if method == "ig" else "")),
                      ("Images", f"{len(idx)} test-task images, evenly spaced; "
                                 f"{int(np.sum(targets == labels))} predicted right")],
            footer=[row for row in report.run_footer(config) if row[0] != "Protocol"])
    log(f"wrote {len(idx)} attributions to {out_dir}: attributions.npz, attributions.png, "
        "report.html")
    return out_dir
