"""A run folder that stays whole: one config's results per folder.

A job's first run records which job it is and the config its results depend on
(`record_run`); a rerun compares before any work (`claim_folder`) and refuses another
job or a changed config, naming the keys, so a folder never mixes checkpoints, sweep
cells and reports of two configs. `JOBS` says, per job, which config keys its results
ignore, what it writes and which files mean it finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable

from jaxrobust import _io

RUN_RECORD = "run.json"


@dataclasses.dataclass(frozen=True)
class Job:
    """What a job's folder holds.

    Attributes:
        ignores: config keys (dotted prefixes) its results do not depend on.
        outputs: what it writes (removed by `restart=True`, with the folder's PNGs).
        finished: the files that are there once it has finished.
    """

    ignores: tuple[str, ...]
    outputs: tuple[str, ...]
    finished: tuple[str, ...]


#: The jobs that keep a folder (`jaxrobust run`, `jaxrobust counterfactual`).
JOBS = {
    "run": Job(ignores=("sweep.devices", "counterfactual"),
               outputs=("models", "sweep_cells", "drift_cells", "results.csv", "drift.csv",
                        "per_image.npz", "summary.json", "config.yaml", "report.html",
                        RUN_RECORD),
               finished=("report.html", "summary.json", "results.csv")),
    "counterfactual": Job(ignores=("sweep", "task"),
                          outputs=("models", "edits.csv", "summary.json", "report.html",
                                   RUN_RECORD),
                          finished=("report.html", "summary.json", "edits.csv")),
}


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


def _result_config(config, job: str = "run") -> dict:
    from jaxrobust import config as config_lib

    flat = {k: v for k, v in _flat(config_lib.to_dict(config)).items()
            if not k.startswith(JOBS[job].ignores)}
    return json.loads(json.dumps(flat))  # as it reads back (tuples -> lists)


def claim_folder(config, out_dir: str, *, job: str = "run", restart: bool = False,
                 log: Callable[[str], None] = print) -> bool:
    """Checks that `out_dir` may hold `job` (`"run"` or `"counterfactual"`, `JOBS`) of
    `config`, before anything is computed.

    A folder's first run records its job and config (`record_run`, once the data have
    loaded). A rerun compares: if the job or a key its results depend on changed, this
    raises at once and touches nothing, so a folder never mixes checkpoints, sweep
    cells and reports of two configs. `restart=True` removes the folder's earlier
    outputs (the job's `outputs` and its PNGs) first.

    Returns:
        Whether the folder already holds this config's finished run (the job's
        `finished` files).

    Raises:
        ValueError: the folder holds another job, or a run of another config; the
            message names the keys (old -> new) and the ways out.
    """
    path = os.path.join(out_dir, RUN_RECORD)
    spec = JOBS[job]
    if restart:
        for name in spec.outputs + tuple(n for n in os.listdir(out_dir) if n.endswith(".png")):
            target = os.path.join(out_dir, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
        log(f"restart: removed the earlier outputs in {out_dir}")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        record = json.load(f)
    old, old_job = record.get("config", {}), record.get("job", "run")
    if old_job != job:
        raise ValueError(f"{out_dir} holds the results of `jaxrobust {old_job}`, not of "
                         f"`jaxrobust {job}`; nothing was touched. Pass another --out.")
    from jaxrobust.config import ModelConfig

    defaults = dataclasses.asdict(ModelConfig())  # keys added since a folder's first run
    if isinstance(old.get("models"), list):
        old["models"] = [{**defaults, **m} if isinstance(m, dict) else m
                         for m in old["models"]]
    flat = _result_config(config, job)
    changed = sorted(k for k in set(old) | set(flat) if old.get(k) != flat.get(k))
    if changed:
        what = ", ".join(f"{k} ({old.get(k)!r} -> {flat.get(k)!r})" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ValueError(f"{out_dir} holds a run with other {what}{more}; nothing was "
                         "touched. Pass another --out, or --restart to start this folder "
                         "afresh.")
    return all(os.path.exists(os.path.join(out_dir, n)) for n in spec.finished)


def finished_summary(out_dir: str, *, log: Callable[[str], None] = print) -> dict:
    """The summary of the finished run in `out_dir` (after `claim_folder` said so)."""
    log(f"{out_dir} holds this run, finished: nothing to do (report.html is there; "
        "--restart recomputes it)")
    with open(os.path.join(out_dir, "summary.json")) as f:
        return json.load(f)


def record_run(config, out_dir: str, *, job: str = "run") -> None:
    """Writes `run.json`, the job and config the folder's results belong to (atomically)."""
    path = os.path.join(out_dir, RUN_RECORD)
    if not os.path.exists(path):
        _io.write_json(path, {"job": job, "config": _result_config(config, job)}, indent=1)
