"""The main job as plain functions, callable from Python and from the CLI.

`run(config, out_dir)`: data -> corruption-type task -> train each model (or resume
its checkpoint) -> sweep under the study's protocol -> report. `run_kernel_demo`
is the kernel protocol alone on a bundled photograph (no training).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _progress, corruptions
from jaxrobust.metrics import psnr, ssim


def sample_image(size: int = corruptions.SEED_IMAGE_SIZE) -> np.ndarray:
    """scikit-image's bundled camera photograph, grayscale, `(size, size, 1)`, 8-bit-valued."""
    from skimage import data, transform

    image = transform.resize(data.camera(), (size, size), anti_aliasing=True)
    return (np.round(image * 255.0) / 255.0).astype(np.float32)[..., None]


def protocol_table(image: np.ndarray, *, key: jax.Array, log: Callable[[str], None] = print):
    """Applies every corruption at every seed level to `image`.

    Args:
        image: `(H, W, C)` float image in [0, 1].
        key: PRNG key for the random corruptions (split per corruption).
        log: progress sink.

    Returns:
        `(rows, corrupted)`: one dict per (corruption, step) with the level, SSIM and
        PSNR; and a dict name -> `(steps, H, W, C)` array of corrupted images.
    """
    rows, corrupted = [], {}
    image = jnp.asarray(image)
    size = min(image.shape[:2])
    for i, name in enumerate(corruptions.names("study")):
        c = corruptions.get(name)
        levels = jnp.asarray(corruptions.seed_levels(name, image_size=size))
        keys = jax.random.split(jax.random.fold_in(key, i), len(levels))
        start = time.perf_counter()
        out = jax.jit(jax.vmap(c.apply, in_axes=(0, None, 0)))(keys, image, levels)
        scores = jax.jit(jax.vmap(ssim, in_axes=(None, 0)))(image, out)
        peaks = jax.jit(jax.vmap(psnr, in_axes=(None, 0)))(image, out)
        out, scores, peaks = jax.device_get((out, scores, peaks))
        log(f"  {name:15s} {len(levels):3d} levels in {time.perf_counter() - start:5.1f} s")
        corrupted[name] = out
        for step, (level, s, p) in enumerate(zip(np.asarray(levels), scores, peaks, strict=True)):
            rows.append({"corruption": name, "label": c.label, "step": step,
                         "level": float(level), "ssim": float(s), "psnr": float(p)})
    return rows, corrupted


def protocol_comparison(images: np.ndarray, *, key: jax.Array):
    """Both protocols of the study's three corruptions, step by step, on `images`.

    For every one of the study's 120 steps: the level `protocol="study"` uses (what
    the study's float64 loop computed), the level `continuous` uses, and the mean SSIM
    of the corrupted images to the clean ones each way (study: SSIM range 2, as its
    code took; continuous: range 1). The table of docs/study.md.

    Args:
        images: `(N, H, W, C)` float images in [0, 1] (square; levels for side H).
        key: PRNG key for the noise (the same draws under both protocols).

    Returns:
        A DataFrame with columns corruption, step, study_level, continuous_level,
        study_ssim, continuous_ssim.
    """
    import pandas as pd

    images = jnp.asarray(images)
    size = images.shape[1]
    rows = []
    for i, name in enumerate(corruptions.names("study")):
        c = corruptions.get(name)
        both = {}
        for protocol, data_range in corruptions.SSIM_DATA_RANGE.items():
            levels = corruptions.seed_levels(name, image_size=size, protocol=protocol)
            encoded = jnp.asarray(corruptions.kernel_levels(name, levels))
            keys = jax.random.split(jax.random.fold_in(key, i), (len(levels), len(images)))

            def step(k, level, data_range=data_range, c=c):
                out = jax.vmap(c.apply, in_axes=(0, 0, None))(k, images, level)
                return jnp.mean(jax.vmap(lambda a, b: ssim(a, b, data_range=data_range))(
                    images, out))

            scores = jax.jit(lambda k, lv, step=step: jax.lax.map(
                lambda a: step(*a), (k, lv)))(keys, encoded)
            both[protocol] = (levels, np.asarray(scores))
        for s in range(len(both["study"][0])):
            rows.append({"corruption": name, "step": s,
                         "study_level": float(both["study"][0][s]),
                         "continuous_level": float(both["continuous"][0][s]),
                         "study_ssim": float(both["study"][1][s]),
                         "continuous_ssim": float(both["continuous"][1][s])})
    return pd.DataFrame(rows)


def _plot(rows, corrupted, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(corrupted)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4))
    for ax, name in zip(axes, names, strict=True):
        sel = [r for r in rows if r["corruption"] == name]
        ax.plot([r["level"] for r in sel], [r["ssim"] for r in sel], marker=".")
        ax.set_xlabel(corruptions.get(name).level_meaning.split(",")[0], fontsize=8)
        ax.set_ylabel("SSIM to the clean image")
        ax.set_title(f"{name} ({corruptions.get(name).label})")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "ssim_vs_level.png"), dpi=110)
    plt.close(fig)

    cols = 6
    fig, axes = plt.subplots(len(names), cols, figsize=(1.9 * cols, 2.1 * len(names)))
    for r, name in enumerate(names):
        stack = corrupted[name]
        picks = np.linspace(0, len(stack) - 1, cols).round().astype(int)
        sel = [row for row in rows if row["corruption"] == name]
        for c, step in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(stack[step][..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{name}\nlevel {sel[step]['level']:.3g}, SSIM {sel[step]['ssim']:.2f}",
                         fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "gallery.png"), dpi=110)
    plt.close(fig)


def gallery_image(source: str, size: int = 224) -> np.ndarray:
    """The gallery's input: an image file, or `sample` (scikit-image's astronaut), as
    an 8-bit-valued float32 `(size, size, C)`: the shorter side resized to `size`, the
    centre cropped square (ImageNet-C's 224-pixel protocol)."""
    from skimage import data, transform

    from jaxrobust.data.sources import read_image

    if source == "sample":
        image = data.astronaut() / 255.0
    elif not os.path.isfile(source):
        raise ValueError(f"gallery image {source} does not exist; pass an image file or "
                         "'sample'.")
    else:
        try:
            image = read_image(source)
        except ValueError as e:
            raise ValueError(f"gallery image {source}: {e}; pass a PNG, JPEG or TIFF "
                             "picture.") from None
    h, w = image.shape[:2]
    scale = size / min(h, w)
    shape = (max(size, round(h * scale)), max(size, round(w * scale)))
    image = transform.resize(image, shape + image.shape[2:], anti_aliasing=True)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    image = image[top:top + size, left:left + size]
    return (np.round(image * 255.0) / 255.0).astype(np.float32)


def corruption_gallery(source: str, out_png: str, *, names=None,
                       severities=(1, 2, 3, 4, 5), size: int = 224, seed: int = 0,
                       progress: bool | None = None) -> str:
    """Writes a PNG grid of `source` under every corruption (rows) at every severity
    (columns), each corruption one compiled call vmapped over the severities.

    Args:
        source: image file, or `sample` for scikit-image's astronaut.
        out_png: the PNG to write (written whole or not at all).
        names: corruptions (default: every corruption with a severity table).
        severities: ImageNet-C severities, may be fractional, in [0, 5].
        size: side of the square the image is resized and cropped to.
        seed: PRNG seed of the random corruptions.
        progress: a bar over the corruptions (True / False / None: process default).

    Returns:
        `out_png`.
    """
    from jaxrobust.report.plots import plot_gallery

    if not out_png.lower().endswith(".png"):
        raise ValueError(f"gallery output {out_png} must be a .png file.")
    names = [corruptions.get(n).name for n in (names or [
        n for n in corruptions.names() if corruptions.get(n).severities is not None])]
    severities = np.asarray(severities, np.float32)
    levels = {n: corruptions.severity(n, severities, image_size=size) for n in names}
    image = gallery_image(source, size)
    keys = jax.random.split(jax.random.key(seed), len(names))
    panels = []
    bar = _progress.bar(names, desc="gallery", unit="corruption", progress=progress)
    for i, name in enumerate(bar):
        bar.set_postfix_str(name)
        fn = jax.jit(jax.vmap(corruptions.get(name).apply, in_axes=(None, None, 0)))
        panels.append(np.asarray(fn(keys[i], jnp.asarray(image), jnp.asarray(levels[name]))))
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    tmp = f"{out_png}.tmp.png"
    try:
        plot_gallery(image, np.stack(panels), names, severities.tolist(), tmp,
                     suptitle=f"jaxrobust corruptions ({size} x {size}, seed {seed})")
        os.replace(tmp, out_png)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_png


def run_kernel_demo(out_dir: str, *, seed: int = 0, log: Callable[[str], None] = print) -> str:
    """Runs the kernel protocol on the built-in image and writes its outputs.

    Writes `results.csv`, `ssim_vs_level.png` and `gallery.png` into `out_dir`; the
    files appear together (written to a temporary folder, then moved), so a failed run
    leaves nothing half-written.

    Returns:
        `out_dir`.
    """
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(
            f"output folder {out_dir} is not empty; pass another --out or remove it."
        )
    image = sample_image()
    log(f"jaxrobust kernel protocol on a {image.shape} image, devices: {jax.devices()}")
    rows, corrupted = protocol_table(image, key=jax.random.key(seed), log=log)
    tmp = tempfile.mkdtemp(prefix=".jaxrobust-", dir=parent)
    try:
        with open(os.path.join(tmp, "results.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _plot(rows, corrupted, tmp)
        if os.path.exists(out_dir):
            os.rmdir(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {len(rows)} rows to {os.path.join(out_dir, 'results.csv')}")
    return out_dir


# ----------------------------------------------------------------------------------
# The main job.
# ----------------------------------------------------------------------------------


def _model_names(config) -> list[str]:
    names, seen = [], {}
    for m in config.models:
        seen[m.name] = seen.get(m.name, 0) + 1
        names.append(m.name if seen[m.name] == 1 else f"{m.name}_{seen[m.name]}")
    return names


def load_split(config, *, log: Callable[[str], None] = print):
    """The config's data set and its train/test split of the clean images.

    Returns:
        `(dataset, train_indices, test_indices)`.
    """
    from jaxrobust import data

    ds = data.load(config.data.source, image_size=config.data.image_size,
                   channels=config.data.channels, strict=config.data.strict,
                   n=config.data.n_images, seed=config.seed, log=log,
                   protocol=config.sweep.protocol)
    log(f"data: {ds.source}, {len(ds.images)} images of {ds.images.shape[1:]}, "
        f"classes {list(ds.class_names)}")
    train_idx, test_idx = data.split(len(ds.images), test_fraction=config.data.test_fraction,
                                     seed=config.seed)
    return ds, train_idx, test_idx


def _output_folder(out_dir: str) -> str:
    """`out_dir` made absolute and created; an error if it cannot be written."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"output folder {out_dir} is not writable; pass another --out.")
    return out_dir


@contextlib.contextmanager
def _publish(out_dir: str):
    """A temporary folder inside `out_dir` whose files are moved in only on success.

    So the report files appear together, and a failure leaves none of them behind.
    """
    tmp = tempfile.mkdtemp(prefix=".report-", dir=out_dir)
    try:
        yield tmp
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(config, *, log: Callable[[str], None] = print, progress: bool | None = None):
    """Loads the data, splits it and builds the train/test corruption tasks.

    Returns:
        `(dataset, test_indices, task_train, task_test)`.
    """
    from jaxrobust import data

    ds, train_idx, test_idx = load_split(config, log=log)
    key = jax.random.key(config.seed)
    task_train = data.corruption_task(ds.images[train_idx], key=jax.random.fold_in(key, 1),
                                      corruptions=tuple(config.task.corruptions),
                                      progress=progress)
    task_test = data.corruption_task(ds.images[test_idx], key=jax.random.fold_in(key, 2),
                                     corruptions=tuple(config.task.corruptions),
                                     progress=progress)
    log(f"task: {len(task_train.images)} training and {len(task_test.images)} test images, "
        f"classes {list(task_train.class_names)}")
    return ds, test_idx, task_train, task_test


def train_models(config, out_dir: str, *, task_train, task_test,
                 log: Callable[[str], None] = print, progress: bool | None = None) -> dict:
    """Trains (or resumes) every configured model in `out_dir/models/<name>`.

    Returns:
        name -> `TrainResult`.
    """
    from jaxrobust import config as config_lib
    from jaxrobust import train

    results = {}
    for name, model_cfg in zip(_model_names(config), config.models, strict=True):
        log(f"train {name} ({model_cfg.name}, width {model_cfg.width})")
        results[name] = train.train(
            model_cfg, config.train, train_images=task_train.images,
            train_labels=task_train.labels, test_images=task_test.images,
            test_labels=task_test.labels, class_names=task_train.class_names,
            model_dir=os.path.join(out_dir, "models", name), seed=config.seed,
            config=config_lib.to_dict(config), log=log, progress=progress)
    return results


def summarize(table, per_image, *, seed: int = 0, target: str = "corruption_type",
              fraction: float = 0.5) -> tuple[dict, dict]:
    """Robustness summaries of a sweep, and bootstrap intervals per (model, corruption).

    Every summary takes its reference from the clean images (`clean_accuracy`, from
    `sweep.run`), never from a sweep step. Critical level and critical SSIM are where
    accuracy crosses `fraction` x clean: falling below it for `target="labels"`,
    reaching it for `corruption_type` (the corruption becomes recognisable). A summary
    that is undefined is a sentence saying why, not a number.
    """
    from jaxrobust import metrics as m

    direction = "falls" if target == "labels" else "rises"
    summary, intervals, clean = {}, {}, {}
    for (model, name), rows in table.groupby(["model", "corruption"], sort=False):
        correct = per_image[f"{name}/{model}/correct"]
        lo, hi = m.bootstrap_interval(correct, seed=seed)
        intervals[model, name] = (lo, hi)
        ref = float(rows["clean_accuracy"].iloc[0]) if "clean_accuracy" in rows else None
        ref = None if ref is None or not np.isfinite(ref) else ref
        clean[model] = ref
        summary.setdefault(model, {})["clean_accuracy"] = (
            ref if ref is not None else "undefined: the model has no class 'original'")
        summary[model][name] = {
            "mean_accuracy": float(rows["accuracy"].mean()),
            "auc": m.area_under_curve(rows["level"], rows["accuracy"]),
            "relative_auc": m.relative_auc(rows["level"], rows["accuracy"], clean=ref),
            "critical_level": m.critical_level(rows["level"], rows["accuracy"], clean=ref,
                                               fraction=fraction, direction=direction),
            "critical_ssim": m.critical_ssim(rows["ssim_mean"], rows["accuracy"], clean=ref,
                                             fraction=fraction, direction=direction),
            "accuracy_by_ssim": m.accuracy_by_ssim(per_image[f"{name}/ssim"], correct, bins=5),
        }
    models = list(dict.fromkeys(table["model"]))
    if len(models) > 1:
        errors = m.corruption_errors(table, baseline=models[-1], clean_accuracy=clean)
        for model in models:
            summary[model]["corruption_error_vs_" + models[-1]] = errors[model]
    return summary, intervals


def critical_ssim_table(summary: dict, *, fraction: float):
    """`(DataFrame, points)`: the critical SSIM per model and corruption, for the report.

    `points` maps `(model, corruption)` to `(critical SSIM, threshold accuracy)` where
    the critical SSIM is a number; the table says in words where it is not.
    """
    import pandas as pd

    rows, points = [], {}
    for model, per in summary.items():
        if model.startswith("_"):
            continue
        clean = per.get("clean_accuracy")
        for name, s in per.items():
            if not isinstance(s, dict) or "critical_ssim" not in s:
                continue
            value = s["critical_ssim"]
            rows.append({"model": model, "corruption": name,
                         "clean accuracy": clean if isinstance(clean, float) else "undefined",
                         "critical SSIM": value, "critical level": s["critical_level"]})
            if isinstance(value, float) and isinstance(clean, float):
                points[model, name] = (value, fraction * clean)
    return pd.DataFrame(rows), points


def protocol_note(config) -> str:
    """One sentence naming the sweep's protocol, SSIM range and limit value."""
    sweep = config.sweep
    rng = sweep.ssim_data_range or corruptions.SSIM_DATA_RANGE[sweep.protocol]
    text = {"study": "study (what the study's code computed: whole-pixel crops, float disk "
                     "radii, its image loading)",
            "continuous": "continuous (the study's schedule as a continuous family: "
                          "fractional crops, whole radii)"}[sweep.protocol]
    text = f"Protocol: {text}; SSIM data range {rng:g}"
    if sweep.levels:
        text += f"; own levels for {', '.join(sweep.levels)}"
    if sweep.limit_ssim is not None:
        text += (f"; limit value: corrupted images with SSIM above {sweep.limit_ssim:g} "
                 "are labelled original")
    return text + "."


def drift_table(classifiers: dict, class_names: dict, images, table, *, key,
                n_images: int = 8, n_levels: int = 8, progress: bool | None = None):
    """Attribution drift of every model under every swept corruption, as a table.

    For `n_images` clean test images and `n_levels` of each corruption's swept levels
    (evenly spaced), `attribution.attribution_drift` compares the saliency map of the
    corrupted image with the clean image's, for the corruption's class as target;
    one row per (model, corruption, level) with the mean SSIM and rank correlation.
    """
    import pandas as pd

    from jaxrobust import attribution

    images = jnp.asarray(images[:n_images])
    rows = []
    bar = _progress.bar(total=len(table.groupby(["model", "corruption"])),
                        desc="attribution drift", unit="curve", progress=progress)
    for model, (apply_fn, params) in classifiers.items():
        for c, (name, sel) in enumerate(table[table["model"] == model].groupby(
                "corruption", sort=False)):
            bar.set_postfix_str(f"{model} {name}")
            levels = sel["level"].to_numpy()
            levels = levels[np.unique(np.linspace(0, len(levels) - 1, n_levels).round()
                                      .astype(int))]
            names = list(class_names[model])
            target = names.index(name) if name in names else 0
            out = attribution.attribution_drift(
                jax.random.fold_in(key, c), apply_fn, params, images,
                np.full(len(images), target), corruption=name, levels=levels)
            for level, s, r in zip(levels, np.asarray(out["ssim"]).mean(1),
                                   np.asarray(out["rank_correlation"]).mean(1), strict=True):
                rows.append({"model": model, "corruption": name, "level": float(level),
                             "ssim": float(s), "rank_correlation": float(r)})
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def saliency_figures(trained: dict, task, out_dir: str, *, per_class: int = 2) -> list:
    """Saliency panels of correctly classified test images, per model and class.

    As in the study's annex (figures 35-38): the gradient magnitude of the predicted
    class's logit (the logit, not the softmax, as the study swapped softmax for linear).
    """
    from jaxrobust import attribution, report

    figures = []
    for name, result in trained.items():
        logits = jax.jit(result.apply_fn)(result.params, jnp.asarray(task.images))
        pred = np.asarray(jnp.argmax(logits, -1))
        picks = [i for c in range(len(task.class_names))
                 for i in np.nonzero((task.labels == c) & (pred == c))[0][:per_class]]
        if not picks:
            continue
        maps = attribution.saliency(result.apply_fn, result.params, task.images[picks],
                                    task.labels[picks])
        titles = [f"{task.class_names[task.labels[i]]} (level {task.levels[i]:.3g}), "
                  f"predicted right" for i in picks]
        path = os.path.join(out_dir, f"saliency_{name}.png")
        report.plot_attribution_panels(task.images[picks], maps, titles, path,
                                       suptitle=f"{name}: saliency of correct predictions")
        figures.append((path, f"Saliency maps of correctly classified test images ({name})"))
    return figures


RUN_RECORD = "run.json"
#: Config keys the main job's results do not depend on (dotted prefixes).
_NOT_RESULTS = ("sweep.devices", "counterfactual")
#: What the main job writes into its folder (removed by `restart=True`).
RUN_OUTPUTS = ("models", "sweep_cells", "results.csv", "drift.csv", "per_image.npz",
               "summary.json", "config.yaml", "report.html", RUN_RECORD)


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def _result_config(config) -> dict:
    from jaxrobust import config as config_lib

    flat = {k: v for k, v in _flat(config_lib.to_dict(config)).items()
            if not k.startswith(_NOT_RESULTS)}
    return json.loads(json.dumps(flat))  # as it reads back (tuples -> lists)


def claim_folder(config, out_dir: str, *, restart: bool = False,
                 log: Callable[[str], None] = print) -> bool:
    """Checks that `out_dir` may hold the main job of `config`, before anything is computed.

    A folder's first run records its config (`record_run`, once the data have loaded).
    A rerun compares: if a key the results depend on changed, this raises at once and
    touches nothing, so a folder never mixes checkpoints, sweep cells and reports of
    two configs. `restart=True` removes the folder's earlier outputs (`RUN_OUTPUTS`
    and its PNGs) first.

    Returns:
        Whether the folder already holds this config's finished run (report, summary,
        results).

    Raises:
        ValueError: the folder holds a run of another config; the message names the
            keys (old -> new) and the ways out.
    """
    path = os.path.join(out_dir, RUN_RECORD)
    if restart:
        for name in RUN_OUTPUTS + tuple(n for n in os.listdir(out_dir) if n.endswith(".png")):
            target = os.path.join(out_dir, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
        log(f"restart: removed the earlier outputs in {out_dir}")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        old = json.load(f).get("config", {})
    flat = _result_config(config)
    changed = sorted(k for k in set(old) | set(flat) if old.get(k) != flat.get(k))
    if changed:
        what = ", ".join(f"{k} ({old.get(k)!r} -> {flat.get(k)!r})" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ValueError(f"{out_dir} holds a run with other {what}{more}; nothing was "
                         "touched. Pass another --out, or --restart to start this folder "
                         "afresh.")
    return all(os.path.exists(os.path.join(out_dir, n))
               for n in ("report.html", "summary.json", "results.csv"))


def record_run(config, out_dir: str) -> None:
    """Writes `run.json`, the config the folder's results belong to (atomically)."""
    path = os.path.join(out_dir, RUN_RECORD)
    if os.path.exists(path):
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"config": _result_config(config)}, f, indent=1)
    os.replace(tmp, path)


def _short(value) -> object:
    """A summary value for a table: numbers as they are, sentences as one word."""
    if isinstance(value, str):
        return "never" if value.startswith("none") else "undefined"
    return value


def leaderboard(summary: dict, trained: dict):
    """One row per model: clean accuracy, and per corruption the mean accuracy, AUC,
    critical level and critical SSIM; mCE and relative mCE against the last model.
    A cell is "never" where accuracy never crosses the critical fraction and
    "undefined" where a summary has no reference (summary.json says why)."""
    import pandas as pd

    rows = []
    for model, per in summary.items():
        if model.startswith("_"):
            continue
        row = {"model": model, "clean accuracy": _short(per.get("clean_accuracy"))}
        history = trained[model].history if model in trained else []
        if history:
            row["test accuracy (task)"] = history[-1]["test_accuracy"]
        for name, s in per.items():
            if not isinstance(s, dict) or "auc" not in s:
                continue
            row[f"{name}: mean acc"] = s["mean_accuracy"]
            row[f"{name}: AUC"] = s["auc"]
            row[f"{name}: critical level"] = _short(s["critical_level"])
            row[f"{name}: critical SSIM"] = _short(s["critical_ssim"])
        for key, s in per.items():
            if key.startswith("corruption_error_vs_"):
                row["mCE"] = _short(s["mCE"])
                row["relative mCE"] = _short(s["relative_mCE"])
        rows.append(row)
    return pd.DataFrame(rows)


def run_overview(config, ds, test_idx, task_train, trained: dict, seconds: float) -> list:
    """`(label, value)` rows of what the main job ran, for the report's top."""
    import jax as _jax

    models = []
    for name, r in trained.items():
        params = sum(int(np.size(p)) for p in _jax.tree.leaves(r.params))
        h = r.history[-1] if r.history else {}
        models.append(f"{name} ({r.metadata.get('model', name)}, width {r.metadata.get('width')}, "
                      f"{params:,} parameters, {len(r.history)} epochs; train accuracy "
                      f"{h.get('train_accuracy', float('nan')):.3f}, test accuracy "
                      f"{h.get('test_accuracy', float('nan')):.3f})")
    meaning = ("the fraction of corrupted test images whose corruption the model names "
               "(so it rises with the level: a faint corruption is hard to see); clean "
               "accuracy: the fraction of clean test images called original"
               if config.sweep.target == "corruption_type" else
               "the fraction of corrupted test images that keep their label; clean "
               "accuracy: the same on the clean images")
    return [("Data", f"{ds.source}: {len(ds.images)} images of {tuple(ds.images.shape[1:])}, "
                     f"classes {', '.join(ds.class_names)}; {len(test_idx)} clean test images "
                     "swept"),
            ("Task", f"{config.sweep.target}: classes {', '.join(task_train.class_names)}; "
                     f"{len(task_train.images)} training images"),
            ("Accuracy means", meaning),
            *[("Model", m) for m in models],
            ("Time", f"{seconds:.0f} s in all")]


def run_flags(summary: dict, trained: dict, num_classes: int) -> list[str]:
    """Sentences about likely problems: overfitting, chance level, curves that never cross."""
    flags = []
    for name, r in trained.items():
        if not r.history:
            continue
        h = r.history[-1]
        if h["train_accuracy"] - h["test_accuracy"] > 0.15:
            flags.append(f"{name} overfits: train accuracy {h['train_accuracy']:.3f}, test "
                         f"{h['test_accuracy']:.3f}.")
        if h["test_accuracy"] <= 1.0 / num_classes + 0.05:
            flags.append(f"{name} is at chance on the test task ({h['test_accuracy']:.3f}; "
                         f"chance {1.0 / num_classes:.3f}): train longer or check the data.")
    for model, per in summary.items():
        if model.startswith("_"):
            continue
        for c, s in per.items():
            if isinstance(s, dict) and isinstance(s.get("critical_level"), str):
                flags.append(f"{model} / {c}: critical level {s['critical_level']}.")
    return flags


def run_footer(config) -> list:
    """`(label, value)` rows: versions, devices, protocol, seed, command line."""
    import importlib.metadata as md
    import sys
    from collections import Counter

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    kinds = Counter(f"{d.platform} {d.device_kind}" for d in jax.devices())
    return [("Versions", ", ".join(f"{n} {version(n)}" for n in
                                   ("jaxrobust", "jax", "jaxlib", "flax", "optax"))),
            ("Devices", ", ".join(f"{n} x {k}" for k, n in kinds.items())),
            ("Protocol", config.sweep.protocol), ("Seed", config.seed),
            ("Command", " ".join(sys.argv))]


def run(config, out_dir: str, *, log: Callable[[str], None] = print,
        progress: bool | None = None, restart: bool = False) -> dict:
    """The main job: train every model, sweep it under the study's protocol, report.

    Writes into `out_dir`: `models/<name>/` (checkpoints; a rerun resumes),
    `sweep_cells/` (finished sweep chunks; a rerun resumes), `results.csv`,
    `per_image.npz`, `summary.json`, the PNG plots and `report.html`.
    Report files are written to a temporary folder and moved in at the end, so a
    failed run leaves no half-written report. A rerun on a folder of another config
    stops before any work (`claim_folder`; `restart=True` starts the folder afresh);
    a rerun of a finished folder returns its summary without recomputing.

    Returns:
        The summary dict.
    """
    import yaml

    from jaxrobust import config as config_lib
    from jaxrobust import report, sweep

    out_dir = _output_folder(out_dir)
    if claim_folder(config, out_dir, restart=restart, log=log):
        log(f"{out_dir} holds this run, finished: nothing to do (report.html is there; "
            "--restart recomputes it)")
        with open(os.path.join(out_dir, "summary.json")) as f:
            return json.load(f)
    start = time.perf_counter()
    ds, test_idx, task_train, task_test = prepare(config, log=log, progress=progress)
    record_run(config, out_dir)  # the data loaded: from here on the folder is this run's
    trained = train_models(config, out_dir, task_train=task_train, task_test=task_test, log=log,
                           progress=progress)
    classifiers = {n: (r.apply_fn, r.params) for n, r in trained.items()}
    class_names = {n: list(r.metadata["class_names"]) for n, r in trained.items()}
    log(f"sweep: {len(test_idx)} clean test images, protocol '{config.sweep.protocol}'")
    table, per_image = sweep.run(
        classifiers, ds.images[test_idx], ds.labels[test_idx],
        corruptions=tuple(config.task.corruptions), key=jax.random.fold_in(
            jax.random.key(config.seed), 3),
        class_names=class_names, batch_size=config.sweep.batch_size,
        target=config.sweep.target, protocol=config.sweep.protocol,
        levels=config.sweep.levels, ssim_data_range=config.sweep.ssim_data_range,
        limit_ssim=config.sweep.limit_ssim, cells_dir=os.path.join(out_dir, "sweep_cells"),
        devices=config.sweep.devices, log=log, progress=progress)
    summary, intervals = summarize(table, per_image, seed=config.seed,
                                   target=config.sweep.target,
                                   fraction=config.sweep.critical_fraction)
    summary["_protocol"] = protocol_note(config)
    log("attribution drift: saliency maps of corrupted vs clean test images")
    drift = drift_table(classifiers, class_names, ds.images[test_idx], table,
                        key=jax.random.fold_in(jax.random.key(config.seed), 5),
                        progress=progress)
    summary["_run"] = {"seconds": time.perf_counter() - start, "devices": str(jax.devices()),
                       "test_accuracy": {n: r.history[-1]["test_accuracy"]
                                         for n, r in trained.items() if r.history}}
    critical_table, critical_points = critical_ssim_table(
        summary, fraction=config.sweep.critical_fraction)
    with _publish(out_dir) as tmp:
        table.to_csv(os.path.join(tmp, "results.csv"), index=False)
        drift.to_csv(os.path.join(tmp, "drift.csv"), index=False)
        np.savez_compressed(os.path.join(tmp, "per_image.npz"), **per_image)
        with open(os.path.join(tmp, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        with open(os.path.join(tmp, "config.yaml"), "w") as f:
            yaml.safe_dump(config_lib.to_dict(config), f, sort_keys=False)
        figures = [
            (report.plot_accuracy_vs_level(table, os.path.join(tmp, "accuracy_vs_level.png"),
                                           ci=intervals), "Accuracy against corruption level"),
            (report.plot_accuracy_vs_ssim(table, os.path.join(tmp, "accuracy_vs_ssim.png"),
                                          critical=critical_points),
             "Accuracy against mean SSIM; a cross marks each critical SSIM, where accuracy "
             f"crosses {config.sweep.critical_fraction:g} x the clean accuracy (interpolated)",
             critical_table),
            (report.plot_ssim_vs_level(table, os.path.join(tmp, "ssim_vs_level.png")),
             "SSIM against corruption level"),
            (report.plot_confusion(per_image, class_names, os.path.join(tmp, "confusion.png")),
             "Predicted class per level"),
            (report.plot_accuracy_and_drift(table, drift, os.path.join(tmp, "drift.png")),
             "Attribution drift: how far the saliency maps of corrupted images move from "
             "the clean images' maps (Spearman rank correlation; 1 = same ranking), beside "
             "the accuracy"),
        ]
        figures += saliency_figures(trained, task_test, tmp)
        history = [dict(model=n, **h) for n, r in trained.items() for h in r.history]
        import pandas as pd

        board = leaderboard(summary, trained)
        applied = {k: v for k, v in config_lib.to_dict(config).items() if k != "counterfactual"}
        report.write_report(
            os.path.join(tmp, "report.html"), title="jaxrobust: corruption robustness sweep",
            figures=figures,
            tables=[("Training", pd.DataFrame(history)), ("Sweep results", table),
                    ("Attribution drift (saliency, 8 test images)", drift)],
            summary=summary, summary_file="summary.json", config=applied,
            notes=[summary["_protocol"]],
            overview=run_overview(config, ds, test_idx, task_train, trained,
                                  time.perf_counter() - start),
            leaderboard=board,
            flags=run_flags(summary, trained, len(task_train.class_names)),
            footer=run_footer(config))
    terminal = board.set_index("model").T.map(lambda v: f"{v:.3g}" if isinstance(v, float) else v)
    log("results by model:\n" + terminal.to_string())
    log(f"wrote {os.path.join(out_dir, 'report.html')} "
        f"({time.perf_counter() - start:.0f} s in all)")
    return summary


# ----------------------------------------------------------------------------------
# The attribution study: edits that make a classifier right.
# ----------------------------------------------------------------------------------

EDIT_METHODS = ("ig_difference", "ig_search", "ig_difference_search", "saliency_search",
                "random_flips")


def run_edits(apply_fn, params, images, labels, cfg, *, key,
              log: Callable[[str], None] = print, progress: bool | None = None) -> dict:
    """Every edit method of `jaxrobust.counterfactual` on `images (N, H, W, C)`.

    Args:
        cfg: a `CounterfactualConfig` (fraction, fractions, IG steps, flips, trials).

    Returns:
        method name -> `counterfactual.Edit`, in `EDIT_METHODS` order.
    """
    from jaxrobust import counterfactual as cf

    calls = {
        "ig_difference": lambda: cf.ig_difference_edit(
            apply_fn, params, images, labels, fraction=cfg.fraction, steps=cfg.ig_steps),
        "ig_search": lambda: cf.ig_fraction_search(
            apply_fn, params, images, labels, fractions=cfg.fractions, steps=cfg.ig_steps),
        "ig_difference_search": lambda: cf.ig_fraction_search(
            apply_fn, params, images, labels, fractions=cfg.fractions, steps=cfg.ig_steps,
            use_difference=True),
        "saliency_search": lambda: cf.saliency_edit(
            apply_fn, params, images, labels, fractions=cfg.fractions),
        "random_flips": lambda: cf.random_flip_search(
            key, apply_fn, params, images, labels, max_flips=cfg.max_flips, trials=cfg.trials),
    }
    edits = {}
    bar = _progress.bar(EDIT_METHODS, desc="counterfactual edits", unit="method",
                        progress=progress)
    for name in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        edits[name] = jax.device_get(calls[name]())
        log(f"  {name:21s} {np.mean(edits[name].success):6.1%} fixed "
            f"({time.perf_counter() - start:5.1f} s)")
    return edits


def edit_table(edits: dict, indices, labels, predicted, class_names):
    """One row per (image, method): success, pixels changed, new prediction, ..."""
    import pandas as pd

    rows = []
    for method, e in edits.items():
        for j, index in enumerate(indices):
            rows.append({
                "image": int(index), "true": class_names[labels[j]],
                "predicted": class_names[predicted[j]], "method": method,
                "success": bool(e.success[j]), "fraction": float(e.fraction[j]),
                "pixels_changed": int(e.pixels_changed[j]),
                "pixel_fraction": float(e.pixel_fraction[j]), "l0": int(e.l0[j]),
                "l2": float(e.l2[j]), "new_prediction": class_names[e.predictions[j]],
                "new_confidence": float(e.confidences[j]),
                "zero_attribution": float(e.vanished[j])})
    return pd.DataFrame(rows)


def run_counterfactual(config, out_dir: str, *, log: Callable[[str], None] = print,
                       progress: bool | None = None) -> dict:
    """The attribution study: train (or restore) a classifier, edit its mistakes.

    Trains `config.models[0]` on the data's own labels (the digits for
    `configs/digits_ig.yaml`) in `out_dir/models/<name>` (a rerun restores it), takes
    the misclassified test images, and runs every method of `run_edits`. Writes
    `edits.csv` (one row per image and method), `summary.json` (success rate and
    pixels changed per method), `edits_<method>.png` panels and `report.html`;
    the report files appear together at the end.

    Returns:
        The summary dict.
    """

    import pandas as pd

    from jaxrobust import config as config_lib
    from jaxrobust import report, train

    out_dir = _output_folder(out_dir)
    start = time.perf_counter()
    cfg = config.counterfactual
    for name in ("fraction", "fractions"):
        values = np.atleast_1d(getattr(cfg, name))
        if values.size == 0 or not np.all((values > 0) & (values <= 1)):
            raise ValueError(f"counterfactual.{name} must lie in (0, 1], got "
                             f"{getattr(cfg, name)}; 0.02 edits 2 % of the pixels.")
    for name in ("ig_steps", "max_flips", "trials"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"counterfactual.{name} must be at least 1, got "
                             f"{getattr(cfg, name)}.")
    ds, train_idx, test_idx = load_split(config, log=log)
    model_cfg = config.models[0]
    name = _model_names(config)[0]
    trained = train.train(model_cfg, config.train, train_images=ds.images[train_idx],
                          train_labels=ds.labels[train_idx], test_images=ds.images[test_idx],
                          test_labels=ds.labels[test_idx], class_names=ds.class_names,
                          model_dir=os.path.join(out_dir, "models", name), seed=config.seed,
                          config=config_lib.to_dict(config), log=log, progress=progress)
    apply_fn, params = trained.apply_fn, trained.params
    images, labels = ds.images[test_idx], ds.labels[test_idx]
    predicted = np.concatenate([np.asarray(jnp.argmax(jax.jit(apply_fn)(params, jnp.asarray(
        images[i:i + 256])), -1)) for i in range(0, len(images), 256)])
    wrong = np.nonzero(predicted != labels)[0]
    if cfg.max_images is not None:
        wrong = wrong[:cfg.max_images]
    log(f"{name}: test accuracy {np.mean(predicted == labels):.3f}; editing {len(wrong)} "
        "misclassified test images")
    names = list(ds.class_names)
    summary = {"model": name, "test_accuracy": float(np.mean(predicted == labels)),
               "misclassified": int(np.sum(predicted != labels)), "edited": len(wrong),
               "methods": {}}
    edits, table = {}, pd.DataFrame()
    if len(wrong):
        edits = run_edits(apply_fn, params, images[wrong], labels[wrong], cfg,
                          key=jax.random.fold_in(jax.random.key(config.seed), 4), log=log,
                          progress=progress)
        table = edit_table(edits, test_idx[wrong], labels[wrong], predicted[wrong], names)
        for method, rows in table.groupby("method", sort=False):
            ok = rows[rows["success"]]
            summary["methods"][method] = {
                "success_rate": float(rows["success"].mean()), "fixed": int(len(ok)),
                "median_pixels_changed": float(ok["pixels_changed"].median()) if len(ok)
                else None,
                "median_fraction": float(ok["fraction"].median()) if len(ok) else None}
    summary["seconds"] = time.perf_counter() - start
    with _publish(out_dir) as tmp:
        table.to_csv(os.path.join(tmp, "edits.csv"), index=False)
        with open(os.path.join(tmp, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        figures = []
        shown = slice(0, 12)
        for method, e in edits.items():
            titles = [(f"#{i}: true {names[y]}, predicted {names[p]}",
                       f"edited: {names[q]} ({c:.0%})" + ("" if ok else ", not fixed"))
                      for i, y, p, q, c, ok in zip(test_idx[wrong], labels[wrong],
                                                   predicted[wrong], e.predictions,
                                                   e.confidences, e.success, strict=True)]
            path = os.path.join(tmp, f"edits_{method}.png")
            report.plot_edit_panels(
                images[wrong][shown], None if method == "random_flips" else
                e.attributions[shown], e.mask[shown], e.images[shown], titles[shown], path,
                suptitle=f"{name}: {method}, {np.mean(e.success):.0%} of {len(wrong)} fixed")
            figures.append((path, f"{method}: original | attribution | edited pixels | edited "
                                  f"(first {min(12, len(wrong))} images)"))
        report.write_report(
            os.path.join(tmp, "report.html"),
            title="jaxrobust: attribution-guided edits of misclassified images",
            figures=figures,
            tables=[("Success per method", pd.DataFrame(
                [{"method": m, **v} for m, v in summary["methods"].items()])),
                ("Every image and method", table)],
            summary=summary, summary_file="summary.json",
            config={k: v for k, v in config_lib.to_dict(config).items()
                    if k not in ("task", "sweep")},
            footer=run_footer(config)[:2] + [("Seed", config.seed), run_footer(config)[-1]],
            notes=[f"Data: {ds.source}; model {name}, test accuracy "
                   f"{summary['test_accuracy']:.3f}; {len(wrong)} misclassified test images "
                   "edited by every method.",
                   "A method succeeds on an image when the edited image is classified as its "
                   "true label. Fractions count pixels; see jaxrobust.counterfactual."])
    log(f"wrote {os.path.join(out_dir, 'report.html')} "
        f"({time.perf_counter() - start:.0f} s in all)")
    return summary
