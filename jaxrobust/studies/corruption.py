"""The corruption study, the main job: data -> corruption-type task -> train each model
(or resume its checkpoint) -> sweep under the configured protocol -> report.

`run(config, out_dir)` is `jaxrobust run`; `train_only` and `sweep_checkpoints` are
`jaxrobust train` and `jaxrobust sweep`. Each stage is a function of its own, callable
from Python. The computing is the core's (`data`, `train`, `sweep`, `metrics`,
`attribution`); the figures and HTML are `report`'s.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _io, _prng, _progress, corruptions
from jaxrobust.studies.folder import (
    RUN_RECORD,
    claim_folder,
    finished_summary,
    output_folder,
    record_run,
)


def model_names(config) -> list[str]:
    """The configured models' names, a repeated one numbered (`vgg16`, `vgg16_2`)."""
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


def prepare(config, *, log: Callable[[str], None] = print, progress: bool | None = None):
    """Loads the data, splits it and builds the train/test corruption tasks.

    Returns:
        `(dataset, test_indices, task_train, task_test)`.
    """
    from jaxrobust import data

    ds, train_idx, test_idx = load_split(config, log=log)
    task_train = data.corruption_task(_prng.stream(config.seed, "task_train"),
                                      ds.images[train_idx],
                                      corruptions=tuple(config.task.corruptions),
                                      table=config.task.table, progress=progress)
    task_test = data.corruption_task(_prng.stream(config.seed, "task_test"),
                                     ds.images[test_idx],
                                     corruptions=tuple(config.task.corruptions),
                                     table=config.task.table, progress=progress)
    log(f"task: {len(task_train.images)} training and {len(task_test.images)} test images, "
        f"classes {list(task_train.class_names)}")
    return ds, test_idx, task_train, task_test


def train_models(config, out_dir: str, *, task_train, task_test,
                 log: Callable[[str], None] = print, progress: bool | None = None) -> dict:
    """Trains (or resumes) every configured model in `out_dir/models/<name>`.

    A model given as `keras_model: FILE` (a saved Keras classifier, such as the
    study's) is loaded instead of trained: its outputs are taken as the task's classes,
    in the task's order (the study's: original, scale_up, median_blur, gaussian_noise).

    Returns:
        name -> `TrainResult` (an empty history for a loaded Keras model).
    """
    from jaxrobust import config as config_lib
    from jaxrobust import models, train

    results = {}
    for name, model_cfg in zip(model_names(config), config.models, strict=True):
        if model_cfg.keras_model is not None:
            apply_fn, params, info = models.load_keras_model(model_cfg.keras_model)
            classes = list(task_train.class_names)
            if info["num_classes"] != len(classes):
                raise ValueError(f"{model_cfg.keras_model} has {info['num_classes']} outputs, "
                                 f"the task {len(classes)} classes ({', '.join(classes)}).")
            log(f"load {name} from {model_cfg.keras_model} ({info['backbone']}, no training)")
            results[name] = train.TrainResult(apply_fn, params, {
                "model": info["backbone"], "class_names": classes,
                "input_shape": list(info["input_shape"]), "keras_model": model_cfg.keras_model},
                [])
            continue
        log(f"train {name} ({model_cfg.name}, width {model_cfg.width})")
        results[name] = train.train(
            model_cfg, config.train, train_images=task_train.images,
            train_labels=task_train.labels, test_images=task_test.images,
            test_labels=task_test.labels, class_names=task_train.class_names,
            model_dir=os.path.join(out_dir, "models", name), seed=config.seed,
            config=config_lib.to_dict(config), log=log, progress=progress)
    return results


def summarize(table, per_image, *, seed: int = 0, target: str = "corruption_type",
              fraction: float = 0.5, benchmark: str = "imagenet") -> tuple[dict, dict]:
    """Robustness summaries of a sweep, and bootstrap intervals per (model, corruption).

    With `target="labels"`, every model also gets the benchmark's published mCE
    (`metrics.corruption_errors`): AlexNet-normalised for `imagenet` (over the swept
    ImageNet-C corruptions), unnormalised for the other tables, from the rows at
    severities 1..5 (the default sweep holds them).

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
    names = set(table["corruption"])
    if target == "labels" and (names & set(m.ALEXNET_ERRORS) if benchmark == "imagenet" else
                               any(corruptions.in_table(n, benchmark) for n in names)):
        alexnet = benchmark == "imagenet"
        errors = m.corruption_errors(table, baseline="alexnet" if alexnet else None,
                                     clean_accuracy=clean, benchmark=benchmark)
        for model in models:
            summary[model]["corruption_error_alexnet" if alexnet else
                           "corruption_error_unnormalised"] = errors[model]
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


def sweep_and_summarize(config, classifiers: dict, class_names: dict, images, labels,
                        out_dir: str, *, log: Callable[[str], None] = print,
                        progress: bool | None = None):
    """`sweep.run` with the config's sweep settings (cells in `out_dir/sweep_cells`,
    the job's "sweep" stream), then `summarize` and the protocol note.

    Returns:
        `(table, per_image, summary, intervals)`.
    """
    from jaxrobust import sweep

    cfg = config.sweep
    table, per_image = sweep.run(
        _prng.stream(config.seed, "sweep"), classifiers, images, labels,
        corruptions=tuple(config.task.corruptions), class_names=class_names,
        batch_size=cfg.batch_size, target=cfg.target, protocol=cfg.protocol,
        table=cfg.table, levels=cfg.levels, ssim_data_range=cfg.ssim_data_range,
        limit_ssim=cfg.limit_ssim,
        cells_dir=os.path.join(out_dir, "sweep_cells"), devices=cfg.devices, log=log,
        progress=progress)
    summary, intervals = summarize(table, per_image, seed=config.seed, target=cfg.target,
                                   fraction=cfg.critical_fraction, benchmark=cfg.table)
    summary["_protocol"] = protocol_note(config)
    return table, per_image, summary, intervals


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


def drift_table(key, classifiers: dict, class_names: dict, images, table, *,
                n_images: int = 8, n_levels: int = 8, cells_dir: str | None = None,
                log: Callable[[str], None] = print, progress: bool | None = None):
    """Attribution drift of every model under every swept corruption, as a table.

    For `n_images` clean test images and `n_levels` of each corruption's swept levels
    (evenly spaced), `attribution.attribution_drift` compares the saliency map of the
    corrupted image with the clean image's, for the corruption's class as target;
    one row per (model, corruption, level) with the mean SSIM and rank correlation.

    With `cells_dir`, each finished (model, corruption) curve is kept there
    (`<model>__<corruption>.json`, with a digest of the key, parameters, images,
    levels and target), and a rerun loads the curves whose digest matches instead of
    recomputing them.
    """
    import pandas as pd

    from jaxrobust import attribution
    from jaxrobust.store import _digest

    images = jnp.asarray(images[:n_images])
    rows, resumed = [], 0
    bar = _progress.bar(total=len(table.groupby(["model", "corruption"])),
                        desc="attribution drift", unit="curve", progress=progress)
    for model, (apply_fn, params) in classifiers.items():
        weights = _digest(*jax.tree.leaves(params)) if cells_dir else None  # once per model
        for c, (name, sel) in enumerate(table[table["model"] == model].groupby(
                "corruption", sort=False)):
            bar.set_postfix_str(f"{model} {name}")
            levels = sel["level"].to_numpy()
            levels = levels[np.unique(np.linspace(0, len(levels) - 1, n_levels).round()
                                      .astype(int))]
            names = list(class_names[model])
            target = names.index(name) if name in names else 0
            curve_key = jax.random.fold_in(key, c)
            cell = os.path.join(cells_dir, f"{model}__{name}.json") if cells_dir else None
            digest = cell and weights + _digest(jax.random.key_data(curve_key), images,
                                                levels, np.int64(target))
            if cell and os.path.exists(cell):
                with open(cell) as f:
                    kept = json.load(f)
                if kept.get("digest") == digest:
                    rows += kept["rows"]
                    resumed += 1
                    bar.update()
                    continue
            out = attribution.attribution_drift(
                curve_key, apply_fn, params, images, np.full(len(images), target),
                corruption=name, levels=levels)
            curve = [{"model": model, "corruption": name, "level": float(level),
                      "ssim": float(s), "rank_correlation": float(r)}
                     for level, s, r in zip(levels, np.asarray(out["ssim"]).mean(1),
                                            np.asarray(out["rank_correlation"]).mean(1),
                                            strict=True)]
            if cell:
                os.makedirs(cells_dir, exist_ok=True)
                _io.write_json(cell, {"digest": digest, "rows": curve})
            rows += curve
            bar.update()
    bar.close()
    if resumed:
        log(f"attribution drift: {resumed} curves resumed from {cells_dir}")
    return pd.DataFrame(rows)


def run(config, out_dir: str, *, log: Callable[[str], None] = print,
        progress: bool | None = None, restart: bool = False) -> dict:
    """The main job: train every model, sweep it under the study's protocol, report.

    Writes into `out_dir`: `models/<name>/` (checkpoints; a rerun resumes),
    `sweep_cells/` (finished sweep chunks; a rerun resumes), `drift_cells/` (finished
    attribution-drift curves; a rerun resumes), `results.csv`,
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
    from jaxrobust import report, store, sweep

    out_dir = output_folder(out_dir)
    if claim_folder(config, out_dir, restart=restart, log=log):
        return finished_summary(out_dir, log=log)
    start = time.perf_counter()
    resumed = os.path.exists(os.path.join(out_dir, RUN_RECORD))
    ds, test_idx, task_train, task_test = prepare(config, log=log, progress=progress)
    record_run(config, out_dir)  # the data loaded: from here on the folder is this run's
    trained = train_models(config, out_dir, task_train=task_train, task_test=task_test, log=log,
                           progress=progress)
    classifiers = {n: (r.apply_fn, r.params) for n, r in trained.items()}
    class_names = {n: list(r.metadata["class_names"]) for n, r in trained.items()}
    log(f"sweep: {len(test_idx)} clean test images, protocol '{config.sweep.protocol}'")
    table, per_image, summary, intervals = sweep_and_summarize(
        config, classifiers, class_names, ds.images[test_idx], ds.labels[test_idx], out_dir,
        log=log, progress=progress)
    log("attribution drift: saliency maps of corrupted vs clean test images")
    drift = drift_table(_prng.stream(config.seed, "drift"), classifiers, class_names,
                        ds.images[test_idx], table, progress=progress, log=log,
                        cells_dir=os.path.join(out_dir, "drift_cells"))
    log("report: clean-test predictions, figures and saliency maps")
    summary["_run"] = {"seconds": time.perf_counter() - start, "devices": str(jax.devices()),
                       "test_accuracy": {n: r.history[-1]["test_accuracy"]
                                         for n, r in trained.items() if r.history}}
    critical_table, critical_points = critical_ssim_table(
        summary, fraction=config.sweep.critical_fraction)
    test_results = {n: (task_test.labels, sweep.clean_predictions(r.apply_fn, r.params,
                                                                  task_test.images),
                        list(task_test.class_names)) for n, r in trained.items()}
    with _io.publish(out_dir) as tmp:
        store.write_results(tmp, table, per_image)
        drift.to_csv(os.path.join(tmp, "drift.csv"), index=False)
        with open(os.path.join(tmp, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        with open(os.path.join(tmp, "config.yaml"), "w") as f:
            yaml.safe_dump(config_lib.to_dict(config), f, sort_keys=False)
        figures = report.sweep_figures(table, per_image, class_names, tmp,
                                       intervals=intervals,
                                       critical=(critical_table, critical_points),
                                       fraction=config.sweep.critical_fraction)
        figures += [
            (report.plot_test_confusion(test_results, os.path.join(tmp, "test_confusion.png")),
             "Clean test set: the task's confusion matrix per model (rows: true class)"),
            (report.plot_training_curves({n: r.history for n, r in trained.items()},
                                         os.path.join(tmp, "training.png")),
             "Training curves: loss and accuracy per epoch, train (solid) and test (dashed)"),
            (report.plot_accuracy_and_drift(table, drift, os.path.join(tmp, "drift.png")),
             "Attribution drift: how far the saliency maps of corrupted images move from "
             "the clean images' maps (Spearman rank correlation; 1 = same ranking), beside "
             "the accuracy"),
        ]
        figures += report.saliency_figures(
            trained, task_test, tmp, predictions={n: p for n, (_, p, _) in test_results.items()})
        history = [dict(model=n, **h) for n, r in trained.items() for h in r.history]
        import pandas as pd

        board = report.leaderboard(summary, trained)
        per_corruption = report.corruption_table(summary)
        applied = {k: v for k, v in config_lib.to_dict(config).items() if k != "counterfactual"}
        report.write_report(
            os.path.join(tmp, "report.html"), title="jaxrobust: corruption robustness sweep",
            figures=figures,
            tables=[("Training", pd.DataFrame(history)),
                    ("Sweep results", table, "results.csv"),
                    ("Attribution drift (saliency, 8 test images)", drift, "drift.csv")],
            summary=summary, summary_file="summary.json", config=applied,
            notes=[summary["_protocol"]],
            overview=report.run_overview(config, ds, test_idx, task_train, trained,
                                         time.perf_counter() - start, resumed=resumed),
            results=[("Results by model", board), ("Per corruption", per_corruption)],
            flags=report.run_flags(summary, trained, len(task_train.class_names)),
            footer=report.run_footer(config))
    log("results by model:\n" + _terminal(board) + "\n\nper corruption:\n"
        + _terminal(per_corruption))
    log(f"wrote {os.path.join(out_dir, 'report.html')} "
        f"({time.perf_counter() - start:.0f} s in all)")
    return summary


def _terminal(frame) -> str:
    """A results table as plain text for the terminal, numbers to 3 significant digits."""
    return frame.to_string(index=False, float_format=lambda v: f"{v:.3g}")


def train_only(config, out_dir: str, *, log: Callable[[str], None] = print,
               progress: bool | None = None) -> dict:
    """`jaxrobust train`: the task and every configured model, trained (or resumed) in
    `out_dir/models/<name>`. Returns name -> `TrainResult`."""
    out_dir = output_folder(out_dir)
    _, _, task_train, task_test = prepare(config, log=log, progress=progress)
    trained = train_models(config, out_dir, task_train=task_train, task_test=task_test,
                           log=log, progress=progress)
    log(f"models in {os.path.join(out_dir, 'models')}")
    return trained


#: The study's classes in its order (Original / Crop / Blur / Noise): a saved Keras
#: model of the study predicts these.
STUDY_CLASSES = ("original", "scale_up", "median_blur", "gaussian_noise")


def compare_prerendered(table, pre, *, benchmark: str, image_size: int | None = None):
    """Pre-rendered and on-the-fly accuracy side by side: one row per (corruption,
    severity, model) of `pre` (`sweep.prerendered_accuracy`), with the sweep `table`'s
    accuracy at that severity's level of `benchmark` (NaN where it was not swept)."""
    import pandas as pd

    from jaxrobust import metrics

    rows = []
    for r in pre.itertuples(index=False):
        swept = table[(table["model"] == r.model) & (table["corruption"] == r.corruption)]
        fly = metrics.accuracy_at_severities(swept, r.corruption, benchmark=benchmark,
                                             image_size=image_size)[r.severity - 1]
        fly = float("nan") if fly is None else fly
        rows.append({"corruption": r.corruption, "severity": r.severity, "model": r.model,
                     "pre-rendered accuracy": r.accuracy, "on-the-fly accuracy": fly,
                     "difference": fly - r.accuracy, "n": r.n})
    return pd.DataFrame(rows)


def sweep_checkpoints(config, checkpoints, out_dir: str, *, keras_models=(),
                      class_names_of_keras=STUDY_CLASSES, data: str | None = None,
                      prerendered: str | None = None, prerendered_names=None,
                      log: Callable[[str], None] = print, progress: bool | None = None):
    """`jaxrobust sweep`: trained checkpoints swept over the config's test images.

    `keras_models` are saved Keras classifiers (Sequential or functional, `.keras` or
    full-model `.h5`, read by `models.load_keras_model`, no training), whose outputs
    are `class_names_of_keras` (default: the study's four classes, in its order); they
    see the images as given, in [0, 1], as the study fed them.

    `data` (`folder:PATH`, `npy:IMAGES.npy[,LABELS.npy]`, `tfds:NAME[/SPLIT]`; see
    `data.stream.open_source`) sweeps every image of that source, read lazily a chunk
    at a time, instead of the config's test split. With several processes
    (`sharding.initialize_processes`), each sweeps its share and only process 0
    writes the results and the report.

    `prerendered` (`cifar10c:PATH`, `imagenetc:PATH`; `data.prerendered`) also
    evaluates the models on a pre-rendered benchmark, and sweeps the same clean images
    on the fly at the config's table's severities 1..5 (`sweep.table`, unless
    `sweep.levels` says otherwise) over `prerendered_names` (default: every corruption
    the set has): the report puts the two accuracies side by side per corruption and
    severity (`prerendered.csv`), the check that on-the-fly reproduces the benchmark.
    It needs `sweep.target: labels`.

    Writes `sweep_cells/` (a rerun resumes), `results.csv`, `per_image.npz` and
    `report.html` (accuracy against level and SSIM, SSIM against level, predicted
    classes) into `out_dir`.

    Returns:
        `(table, per_image)` of `sweep.run`.

    Raises:
        ValueError: no checkpoint, or one whose input shape differs from the config's.
    """
    from jaxrobust import config as config_lib
    from jaxrobust import models, report, store, train

    if not checkpoints and not keras_models:
        raise ValueError("sweep needs --checkpoint MODEL_DIR or --keras-model FILE (one or "
                         "more), e.g. runs/demo/models/xception.")
    classifiers, class_names, shapes, sizes = {}, {}, {}, {}
    for path in checkpoints:
        apply_fn, params, meta = train.restore(path)
        name = os.path.basename(os.path.normpath(path))
        classifiers[name] = (apply_fn, params)
        class_names[name] = meta["class_names"]
        shapes[path] = meta["input_shape"]
    for path in keras_models:
        apply_fn, params, info = models.load_keras_model(path)
        if info["num_classes"] != len(class_names_of_keras):
            raise ValueError(f"{path} has {info['num_classes']} classes, but "
                             f"{len(class_names_of_keras)} class names were given; pass "
                             "--class-names with one name per output.")
        name = os.path.splitext(os.path.basename(path))[0]
        classifiers[name] = (apply_fn, params)
        class_names[name] = list(class_names_of_keras)
        sizes[path] = list(info["input_shape"][:2])
    if data is None:
        ds, _, test_idx = load_split(config, log=log)
        images, labels = ds.images[test_idx], ds.labels[test_idx]
        described = f"{ds.source}: {len(test_idx)} clean test images"
        shape = list(images.shape[1:])
    else:
        from jaxrobust.data import stream

        images, _ = stream.open_source(data, image_size=config.data.image_size,
                                       channels=config.data.channels)
        labels = None
        described = f"{data}: {len(images)} clean images (streamed)"
        shape = list(np.asarray(images[np.arange(1)][0]).shape[1:])
    for path, want in sizes.items():  # a Keras backbone takes gray (repeated) or RGB
        if want != shape[:2]:
            raise ValueError(f"{path} takes {want[0]}x{want[1]} images, the config's are "
                             f"{shape[0]}x{shape[1]}; set data.image_size to match.")
    for path, want in shapes.items():
        if want != shape:
            raise ValueError(f"checkpoint {path} takes images of shape {want}, the config's "
                             f"data are {shape}; set data.image_size / data.channels to match.")
    if prerendered is not None:
        import dataclasses

        from jaxrobust.data.prerendered import SEVERITIES, open_prerendered

        if config.sweep.target != "labels":
            raise ValueError("--prerendered compares label accuracy: add --set "
                             "sweep.target=labels.")
        pset = open_prerendered(prerendered, image_size=shape[0], channels=shape[-1])
        names = [corruptions.get(n).name for n in (prerendered_names or pset.corruptions)]
        lacking = [n for n in names if n not in pset.files]
        if lacking:
            raise ValueError(f"{prerendered} has no {', '.join(lacking)} (it has "
                             f"{', '.join(pset.corruptions)}); pass --corruptions among them.")
        levels = {n: corruptions.severity(n, list(SEVERITIES), table=config.sweep.table,
                                          image_size=shape[0]).tolist() for n in names}
        config = dataclasses.replace(
            config, task=dataclasses.replace(config.task, corruptions=names),
            sweep=dataclasses.replace(config.sweep, levels={**levels,
                                                            **(config.sweep.levels or {})}))
        described += f"; pre-rendered {prerendered}"
    out_dir = output_folder(out_dir)
    table, per_image, summary, intervals = sweep_and_summarize(
        config, classifiers, class_names, images, labels, out_dir, log=log,
        progress=progress)
    if prerendered is not None:
        from jaxrobust import sweep

        pre = sweep.prerendered_accuracy(
            classifiers, {(n, s): pset.source(n, s) for n in names for s in SEVERITIES},
            progress=progress)
        side = compare_prerendered(table, pre, benchmark=config.sweep.table,
                                   image_size=shape[0])
    if jax.process_index() != 0:  # process 0 writes the results and the report
        return table, per_image
    with _io.publish(out_dir) as tmp:
        store.write_results(tmp, table, per_image)
        if prerendered is not None:
            side.to_csv(os.path.join(tmp, "prerendered.csv"), index=False)
        figures = report.sweep_figures(table, per_image, class_names, tmp,
                                       intervals=intervals,
                                       critical=critical_ssim_table(
                                           summary, fraction=config.sweep.critical_fraction),
                                       fraction=config.sweep.critical_fraction)
        if prerendered is not None:  # the check that on-the-fly reproduces the files
            figures.insert(0, (report.plot_prerendered(side, os.path.join(
                tmp, "prerendered.png")), f"Pre-rendered ({prerendered}, dashed) and "
                f"on-the-fly ({config.sweep.table} table, solid) accuracy per severity",
                side))
        _io.write_json(os.path.join(tmp, "summary.json"), summary)
        report.write_report(
            os.path.join(tmp, "report.html"), title="jaxrobust: sweep of trained checkpoints",
            figures=figures, tables=[("Sweep results", table, "results.csv")],
            summary=summary,
            summary_file="summary.json",
            config={k: v for k, v in config_lib.to_dict(config).items()
                    if k in ("data", "task", "sweep", "seed")},
            notes=[summary["_protocol"]],
            overview=[("Checkpoints", ", ".join(checkpoints)),
                      ("Data", f"{described} of {tuple(shape)} swept")],
            results=[("Results by model", report.leaderboard(summary, {})),
                     ("Per corruption", report.corruption_table(summary))],
            flags=report.run_flags(summary, {}, 0), footer=report.run_footer(config))
    log(f"wrote {len(table)} rows to {os.path.join(out_dir, 'results.csv')} and "
        f"{os.path.join(out_dir, 'report.html')}")
    return table, per_image
