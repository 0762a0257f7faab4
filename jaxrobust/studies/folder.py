"""A run folder that stays whole: one config's results per folder.

A job's first run records the config its results depend on (`record_run`); a rerun
compares before any work (`claim_folder`) and refuses a changed config, naming the
keys, so a folder never mixes checkpoints, sweep cells and reports of two configs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable

from jaxrobust import _io

RUN_RECORD = "run.json"


#: Config keys the main job's results do not depend on (dotted prefixes).
_NOT_RESULTS = ("sweep.devices", "counterfactual")


#: What the main job writes into its folder (removed by `restart=True`).
RUN_OUTPUTS = ("models", "sweep_cells", "results.csv", "drift.csv", "per_image.npz",
               "summary.json", "config.yaml", "report.html", RUN_RECORD)


def output_folder(out_dir: str) -> str:
    """`out_dir` made absolute and created; an error if it cannot be written."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"output folder {out_dir} is not writable; pass another --out.")
    return out_dir


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
    from jaxrobust.config import ModelConfig

    defaults = dataclasses.asdict(ModelConfig())  # keys added since a folder's first run
    if isinstance(old.get("models"), list):
        old["models"] = [{**defaults, **m} if isinstance(m, dict) else m
                         for m in old["models"]]
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
    if not os.path.exists(path):
        _io.write_json(path, {"config": _result_config(config)}, indent=1)
