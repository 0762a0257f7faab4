"""Typed configuration: dataclasses loaded from YAML, with dotted overrides.

A config file mirrors `Config`; keys it does not name keep their defaults, and a
key that is not a field is an error (no silent typos). Overrides use dotted paths,
with list items by index: `train.epochs=3`, `models.0.width=0.5`,
`task.corruptions=[blur,noise]` (values are parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

import numpy as np
import yaml


@dataclasses.dataclass
class DataConfig:
    """Where images come from. `source`: `phantom`, `digits`, `folder:PATH`, `tfds:NAME`."""

    source: str = "phantom"
    image_size: int = 64
    channels: int = 1
    n_images: int = 120          # phantom only
    strict: bool = False         # folder: unreadable files are errors, not warnings
    test_fraction: float = 0.25


@dataclasses.dataclass
class TaskConfig:
    """The corruption-type task: which corruptions become classes."""

    corruptions: list[str] = dataclasses.field(
        default_factory=lambda: ["scale_up", "median_blur", "gaussian_noise"])
    #: the benchmark whose parameters the ImageNet-C corruptions follow:
    #: imagenet | cifar10 | tinyimagenet | imagenet64 (corruptions.tables)
    table: str = "imagenet"


@dataclasses.dataclass
class ModelConfig:
    """One classifier: a backbone with the study's head."""

    name: str = "small_cnn"
    width: float = 1.0
    hidden: int = 1028
    bn_momentum: float = 0.99   # Keras' default; 0.9 settles faster in short runs
    #: Keras' preprocess_input inside the model: none | tf | caffe | keras (the
    #: backbone's own) | auto (keras with `weights`, none without).
    preprocess: str = "auto"
    #: A Keras notop weights file for the backbone (vgg16 / xception at width 1.0), as
    #: keras.applications caches it (models.KERAS_NOTOP names the file): the backbone
    #: starts from it. No download: place the file yourself.
    weights: str | None = None
    #: Keep the backbone as loaded (its batch norm in inference mode), train the head.
    freeze_backbone: bool = False
    #: A saved Keras classifier (Sequential or functional, .keras or full-model .h5) used
    #: as it is, without training (models.load_keras_model).
    keras_model: str | None = None


@dataclasses.dataclass
class TrainConfig:
    """Optimisation: Adam (or `sgd`) on cross-entropy."""

    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"


@dataclasses.dataclass
class SweepConfig:
    """The intensity sweep.

    `protocol: continuous` is the study's schedule as a continuous family (fractional
    crops, whole radii, SSIM range 1); `protocol: study` is what the study's code
    computed (whole-pixel crops, float disk radii, SSIM range 2, its image loading);
    docs/study.md compares them step by step.
    """

    protocol: str = "continuous"
    batch_size: int | None = None   # images per chunk; None: chosen from the free memory
    devices: int | None = None      # split chunks over this many local devices (None: all)
    target: str = "corruption_type"
    levels: dict[str, list[float]] | None = None  # corruption -> its own levels
    ssim_data_range: float | None = None  # None: the protocol's (continuous 1, study 2)
    limit_ssim: float | None = None  # the study's limit value: above it, label `original`
    critical_fraction: float = 0.5   # critical level / SSIM: where accuracy crosses this x clean
    #: the benchmark whose parameters the ImageNet-C corruptions follow:
    #: imagenet | cifar10 | tinyimagenet | imagenet64 (corruptions.tables)
    table: str = "imagenet"


@dataclasses.dataclass
class CounterfactualConfig:
    """The attribution study's edits (`jaxrobust counterfactual`), see `counterfactual`."""

    fraction: float = 0.02           # the IG-difference edit's budget (the study's 2 %)
    fractions: list[float] = dataclasses.field(
        default_factory=lambda: [round(i / 100, 2) for i in range(1, 61)])
    ig_steps: int = 50
    max_flips: int = 300
    trials: int = 32
    max_images: int | None = None    # explain at most this many misclassified images


@dataclasses.dataclass
class Config:
    """A whole run."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    models: list[ModelConfig] = dataclasses.field(default_factory=lambda: [ModelConfig()])
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    counterfactual: CounterfactualConfig = dataclasses.field(
        default_factory=CounterfactualConfig)
    seed: int = 0


def _build(cls, raw: Any, where: str):
    if dataclasses.is_dataclass(cls):
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValueError(f"config: {where or 'the file'} must be a mapping, got {raw!r}.")
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            prefix = f"{where}." if where else ""
            raise ValueError(f"config: unknown key {prefix}{unknown[0]}; "
                             f"known keys here: {', '.join(sorted(fields))}.")
        return cls(**{k: _build(hints[k], v, f"{where}.{k}" if where else k)
                      for k, v in raw.items()})
    origin = typing.get_origin(cls)
    if origin is dict:
        key_type, item = typing.get_args(cls)
        if not isinstance(raw, dict):
            raise ValueError(f"config: {where} must be a mapping, got {raw!r}.")
        return {_build(key_type, k, where): _build(item, v, f"{where}.{k}")
                for k, v in raw.items()}
    if origin is list:
        (item,) = typing.get_args(cls)
        if not isinstance(raw, list):
            raise ValueError(f"config: {where} must be a list, got {raw!r}.")
        return [_build(item, v, f"{where}.{i}") for i, v in enumerate(raw)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(cls) if a is not type(None)]
        return None if raw is None else _build(args[0], raw, where)
    if cls is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if cls in (int, float, str, bool) and not (isinstance(raw, cls) and
                                              not (cls is int and isinstance(raw, bool))):
        raise ValueError(f"config: {where} must be {cls.__name__}, got {raw!r}.")
    return raw


def _set(tree: dict, path: list[str], value, full: str):
    node: Any = tree
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if part not in node or node[part] is None:
            node[part] = [] if path[i + 1].isdigit() else {}
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        index = int(last)
        if index == len(node):
            node.append(value)
        elif 0 <= index < len(node):
            node[index] = value
        else:
            raise ValueError(f"override {full}: index {index} out of range.")
    else:
        node[last] = value


def _merge(base, raw):
    if isinstance(base, dict) and isinstance(raw, dict):
        out = dict(base)
        for k, v in raw.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return raw


def load(path: str | None = None, overrides: list[str] = ()) -> Config:
    """Reads a YAML config (or the defaults), applies `key=value` overrides, validates.

    Raises:
        ValueError: missing file, bad YAML, unknown key, ill-typed value, bad override.
    """
    raw: dict = dataclasses.asdict(Config())
    if path is not None:
        if not os.path.isfile(path):
            raise ValueError(f"config file {path} does not exist.")
        try:
            with open(path) as f:
                loaded = yaml.safe_load(f)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or type(e).__name__
            raise ValueError(f"config file {path} is not valid YAML{where}: {problem}; "
                             "fix the file's syntax.") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level.")
        raw = _merge(raw, loaded or {})
        if loaded and "models" in loaded:
            raw["models"] = [_merge(dataclasses.asdict(ModelConfig()), m) if isinstance(m, dict)
                             else m for m in loaded["models"]]
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value, e.g. train.epochs=3.")
        value = yaml.safe_load(text) if text else ""
        _set(raw, key.strip().split("."), value, item)
    return _build(Config, raw, "")


def validate(config: Config, *, trains: bool = True) -> Config:
    """Checks every name in `config` before any data is generated or a model trained.

    Corruption names (aliases allowed), model names, the data source's kind, the
    optimizer, the sweep's protocol and target, and the counts that must be positive.

    With `trains` (a job that builds the configured models: run, train,
    counterfactual), also what those models need: pretrained weights files that
    exist, and images large enough for each backbone.

    Raises:
        ValueError: one line naming the key, the bad value and the accepted ones.
    """
    from jaxrobust import corruptions, models
    from jaxrobust.models.preprocess import MODES

    for i, name in enumerate(config.task.corruptions):
        try:
            corruptions.get(name)
        except ValueError as e:
            raise ValueError(f"config: task.corruptions.{i}: {e}") from None
    if not config.task.corruptions:
        raise ValueError("config: task.corruptions is empty; name at least one corruption "
                         "(`jaxrobust corruptions` lists them).")
    if not config.models:
        raise ValueError("config: models is empty; configure at least one model.")
    for i, m in enumerate(config.models):
        if m.name not in models.names():
            raise ValueError(f"config: models.{i}.name {m.name!r} is not a model; use one of "
                             f"{', '.join(models.names())}.")
        if m.preprocess not in MODES:
            raise ValueError(f"config: models.{i}.preprocess {m.preprocess!r}; use one of "
                             f"{', '.join(MODES)}.")
        if m.keras_model is not None and not os.path.isfile(os.path.expanduser(m.keras_model)):
            raise ValueError(f"config: models.{i}.keras_model: {m.keras_model} does not exist; "
                             "pass a saved Keras classifier (.keras or full-model .h5).")
        if not trains or m.keras_model is not None:
            continue
        if m.weights is not None:
            models.check_weights_config(m.name, m.weights, width=m.width, where=f"models.{i}")
        elif m.freeze_backbone:
            raise ValueError(f"config: models.{i}.freeze_backbone keeps a loaded backbone; "
                             f"set models.{i}.weights to a Keras notop file, or drop it.")
        least = models.MIN_SIZE.get(m.name, 1)
        if config.data.image_size < least:
            raise ValueError(f"config: models.{i}.name {m.name} takes images of at least "
                             f"{least}x{least}, but data.image_size is "
                             f"{config.data.image_size}; raise data.image_size or use "
                             "small_cnn.")
    source = config.data.source
    if source not in ("phantom", "digits") and not source.startswith(("folder:", "tfds:")):
        raise ValueError(f"config: data.source {source!r} is not a data source; use phantom, "
                         "digits, folder:PATH or tfds:NAME.")
    if config.train.optimizer not in ("adam", "sgd"):
        raise ValueError(f"config: train.optimizer {config.train.optimizer!r}; use adam or sgd.")
    if config.sweep.protocol == "seed":
        raise ValueError("config: sweep.protocol 'seed' was renamed: use continuous (the same "
                         "schedule) or study (what the study's code computed).")
    if config.sweep.protocol not in corruptions.PROTOCOLS:
        raise ValueError(f"config: sweep.protocol {config.sweep.protocol!r}; use "
                         f"{' or '.join(corruptions.PROTOCOLS)}.")
    for name, levels in (config.sweep.levels or {}).items():
        try:
            corruptions.get(name)
        except ValueError as e:
            raise ValueError(f"config: sweep.levels.{name}: {e}") from None
        if not levels or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                 for v in levels):
            raise ValueError(f"config: sweep.levels.{name} must be a non-empty list of "
                             f"numbers, got {levels!r}.")
    for where, table in (("task.table", config.task.table), ("sweep.table", config.sweep.table)):
        if table not in corruptions.tables.BENCHMARKS:
            raise ValueError(f"config: {where} {table!r}; use one of "
                             f"{', '.join(corruptions.tables.BENCHMARKS)}.")
    if config.sweep.ssim_data_range is not None and not config.sweep.ssim_data_range > 0:
        raise ValueError(f"config: sweep.ssim_data_range must be positive, got "
                         f"{config.sweep.ssim_data_range}.")
    if config.sweep.limit_ssim is not None and not -1 <= config.sweep.limit_ssim <= 1:
        raise ValueError(f"config: sweep.limit_ssim must lie in [-1, 1] (an SSIM), got "
                         f"{config.sweep.limit_ssim}.")
    if not 0 < config.sweep.critical_fraction <= 1:
        raise ValueError(f"config: sweep.critical_fraction must lie in (0, 1], got "
                         f"{config.sweep.critical_fraction}.")
    if config.sweep.target not in ("corruption_type", "labels"):
        raise ValueError(f"config: sweep.target {config.sweep.target!r}; use corruption_type "
                         "or labels.")
    for key, value in (("data.image_size", config.data.image_size),
                       ("data.n_images", config.data.n_images),
                       ("train.epochs", config.train.epochs),
                       ("train.batch_size", config.train.batch_size)):
        if value < 1:
            raise ValueError(f"config: {key} must be at least 1, got {value}.")
    if config.data.channels not in (1, 3):
        raise ValueError(f"config: data.channels must be 1 or 3, got {config.data.channels}.")
    cf = config.counterfactual
    for name in ("fraction", "fractions"):
        values = np.atleast_1d(getattr(cf, name))
        if values.size == 0 or not np.all((values > 0) & (values <= 1)):
            raise ValueError(f"config: counterfactual.{name} must lie in (0, 1], got "
                             f"{getattr(cf, name)}; 0.02 edits 2 % of the pixels.")
    for name in ("ig_steps", "max_flips", "trials"):
        if getattr(cf, name) < 1:
            raise ValueError(f"config: counterfactual.{name} must be at least 1, got "
                             f"{getattr(cf, name)}.")
    return config


def shipped() -> dict[str, str]:
    """The configs that ship inside the package: name -> path of its YAML file.

    They live in `jaxrobust/configs/` (package data, so they are there after a wheel or
    `pip install .` as well as in a source checkout); copy one to start your own.
    """
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
    if not os.path.isdir(root):
        return {}
    return {f[:-5]: os.path.join(root, f) for f in sorted(os.listdir(root))
            if f.endswith(".yaml")}


def resolve(name_or_path: str) -> str:
    """The YAML file for a shipped config's name (`demo`) or a path (`my.yaml`).

    A name is looked up among `shipped()` configs, so it works from any folder; an
    existing file, or anything that looks like a path, is taken as a path.

    Raises:
        ValueError: neither a file nor a shipped config's name.
    """
    if os.path.isfile(name_or_path):
        return name_or_path
    looks_like_path = os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml"))
    found = shipped()
    if not looks_like_path and name_or_path in found:
        return found[name_or_path]
    if looks_like_path:
        raise ValueError(f"config file {name_or_path} does not exist; pass the path of a YAML "
                         f"file or a shipped config's name ({', '.join(found)}).")
    raise ValueError(f"no config {name_or_path!r}: pass the path of a YAML file or a shipped "
                     f"config's name ({', '.join(found)}; `jaxrobust configs` lists them).")


def to_dict(config: Config) -> dict:
    """The config as plain data (for YAML/JSON next to the results)."""
    return dataclasses.asdict(config)
