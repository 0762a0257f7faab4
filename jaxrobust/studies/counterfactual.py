"""The attribution study: train (or restore) a classifier, then edit its mistakes with
every method of `jaxrobust.counterfactual` until it is right. `run(config, out_dir)`
is `jaxrobust counterfactual`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import _io, _prng, _progress
from jaxrobust.studies.corruption import load_split, model_names
from jaxrobust.studies.folder import claim_folder, finished_summary, output_folder, record_run

EDIT_METHODS = ("ig_difference", "ig_search", "ig_difference_search", "saliency_search",
                "random_flips")


def run_edits(key, apply_fn, params, images, labels, cfg, *,
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


def run(config, out_dir: str, *, log: Callable[[str], None] = print,
        progress: bool | None = None, restart: bool = False) -> dict:
    """The attribution study: train (or restore) a classifier, edit its mistakes.

    Trains `config.models[0]` on the data's own labels (the digits for
    `configs/digits_ig.yaml`) in `out_dir/models/<name>` (a rerun restores it), takes
    the misclassified test images, and runs every method of `run_edits`. Writes
    `edits.csv` (one row per image and method), `summary.json` (success rate and
    pixels changed per method), `edits_<method>.png` panels and `report.html`;
    the report files appear together at the end. The folder stays whole as the main
    job's does (`folder.claim_folder`): a rerun with a changed config stops before any
    work (`restart=True` starts afresh), and a rerun of a finished folder returns its
    summary.

    Returns:
        The summary dict.
    """

    import pandas as pd

    from jaxrobust import config as config_lib
    from jaxrobust import report, train

    out_dir = output_folder(out_dir)
    config_lib.validate(config)
    if claim_folder(config, out_dir, job="counterfactual", restart=restart, log=log):
        return finished_summary(out_dir, log=log)
    start = time.perf_counter()
    cfg = config.counterfactual
    ds, train_idx, test_idx = load_split(config, log=log)
    record_run(config, out_dir, job="counterfactual")
    model_cfg = config.models[0]
    name = model_names(config)[0]
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
        edits = run_edits(_prng.stream(config.seed, "edits"), apply_fn, params, images[wrong],
                          labels[wrong], cfg, log=log, progress=progress)
        table = edit_table(edits, test_idx[wrong], labels[wrong], predicted[wrong], names)
        for method, rows in table.groupby("method", sort=False):
            ok = rows[rows["success"]]
            summary["methods"][method] = {
                "success_rate": float(rows["success"].mean()), "fixed": int(len(ok)),
                "median_pixels_changed": float(ok["pixels_changed"].median()) if len(ok)
                else None,
                "median_fraction": float(ok["fraction"].median()) if len(ok) else None}
    summary["seconds"] = time.perf_counter() - start
    with _io.publish(out_dir) as tmp:
        table.to_csv(os.path.join(tmp, "edits.csv"), index=False)
        with open(os.path.join(tmp, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        figures = []
        shown = slice(0, 8)
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
                                  f"(first {min(8, len(wrong))} images)"))
        methods = pd.DataFrame([{"method": m, "success rate": v["success_rate"],
                                 "fixed": v["fixed"], "of": len(wrong),
                                 "median pixels changed": v["median_pixels_changed"],
                                 "median fraction": v["median_fraction"]}
                                for m, v in summary["methods"].items()])
        flags = report.training_flags({name: trained}, len(names))
        flags += [f"{m}: fixed none of the {len(wrong)} images." for m, v in
                  summary["methods"].items() if v["fixed"] == 0]
        if not len(wrong):
            flags.append(f"{name} classifies every test image right: nothing to edit.")
        report.write_report(
            os.path.join(tmp, "report.html"),
            title="jaxrobust: attribution-guided edits of misclassified images",
            figures=figures, tables=[("Every image and method", table, "edits.csv")],
            summary=summary, summary_file="summary.json",
            config={k: v for k, v in config_lib.to_dict(config).items()
                    if k not in ("task", "sweep")},
            overview=[
                ("Data", f"{ds.source}: {len(ds.images)} images of "
                         f"{tuple(ds.images.shape[1:])}, classes {', '.join(names)}; "
                         f"{len(test_idx)} test images"),
                ("Model", report.model_line(name, trained)),
                ("Edited", f"{len(wrong)} misclassified test images (of "
                           f"{summary['misclassified']}), each by every method"),
                ("Success means", "the edited image is classified as its true label; "
                                  "pixels changed counts the edited pixels, fraction the "
                                  "share of the image's pixels (see jaxrobust.counterfactual)"),
                ("Time", f"{time.perf_counter() - start:.0f} s in all")],
            results=[("Success per method", methods)], flags=flags,
            footer=[row for row in report.run_footer(config) if row[0] != "Protocol"])
    log(f"wrote {os.path.join(out_dir, 'report.html')} "
        f"({time.perf_counter() - start:.0f} s in all)")
    return summary
