"""Loading Keras weight files (Keras 3 `.weights.h5` and legacy `.h5`) into Flax models."""

from __future__ import annotations

import os
import re

import numpy as np

from jaxrobust.models.layers import keras_class, keras_weights, to_flax

_SNAKE = {"Conv2D": "conv2d", "SeparableConv2D": "separable_conv2d",
          "BatchNormalization": "batch_normalization", "Dense": "dense"}


def _decode(x) -> str:
    return x.decode("utf8") if isinstance(x, bytes) else str(x)


def _legacy_layers(group) -> list[tuple[str, list[np.ndarray]]]:
    out = []
    for name in group.attrs["layer_names"]:
        name = _decode(name)
        weight_names = [_decode(w) for w in group[name].attrs.get("weight_names", [])]
        if weight_names:
            out.append((name, [np.asarray(group[name][w]) for w in weight_names]))
    return out


def _keras3_layers(group) -> dict[str, list[np.ndarray]]:
    out = {}
    for name, layer in group.items():
        if "vars" in layer and len(layer["vars"]):
            vars_ = layer["vars"]
            out[name] = [np.asarray(vars_[k]) for k in sorted(vars_, key=int)]
    return out


def read_keras_weights(path: str, classes: list[str]) -> list[tuple[str, list[np.ndarray]]]:
    """The weighted layers of a Keras weights file, in the model's layer order.

    Args:
        path: a Keras 3 `.weights.h5` file or a legacy (Keras 2 / `keras.applications`)
            `.h5` weights file.
        classes: the Keras class of each weighted layer of the target model, in order;
            a Keras 3 file names its layers by class and counter (`conv2d_3`), so the
            order is rebuilt from these.

    Returns:
        `(layer name in the file, [arrays in Keras' weight order])` per layer.

    Raises:
        ValueError: unreadable file, unknown layout, or a layer the order needs is missing.
    """
    try:
        import h5py
    except ImportError as e:
        raise ValueError("reading Keras weights needs h5py: pip install 'jaxrobust[keras]'.") from e
    if not os.path.isfile(path):
        raise ValueError(f"Keras weights file {path} does not exist; pass the path of a "
                         ".weights.h5 or .h5 file.")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"cannot read {path} as HDF5 ({e}); is it a Keras weights file?") from e
    with f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in group.attrs:
            return _legacy_layers(group)
        if "layers" in group:
            found = _keras3_layers(group["layers"])
            seen: dict[str, int] = {}
            out = []
            for cls in classes:
                snake = _SNAKE[cls]
                k = seen.get(snake, 0)
                seen[snake] = k + 1
                name = snake if k == 0 else f"{snake}_{k}"
                if name not in found:
                    have = sorted(found, key=lambda s: [int(t) if t.isdigit() else t
                                                        for t in re.split(r"(\d+)", s)])
                    raise ValueError(
                        f"{path}: layer {name!r} ({cls}) is missing; the file has "
                        f"{len(found)} weighted layers ({', '.join(have[:6])}, ...). "
                        "Is it the weights of another architecture?"
                    )
                out.append((name, found[name]))
            if len(found) != len(classes):
                raise ValueError(
                    f"{path}: the file has {len(found)} weighted layers, the model "
                    f"{len(classes)}; is it the weights of another architecture?"
                )
            return out
    raise ValueError(f"{path}: not a Keras weights layout (no 'layer_names' and no 'layers').")


def assign_keras_weights(model, path: str, *, model_name: str) -> None:
    """Copies the weights in `path` into `model` (which has `keras_layers()`), in place.

    Raises:
        ValueError: naming the first layer whose count or shapes do not match.
    """
    layers = model.keras_layers()
    loaded = read_keras_weights(path, [keras_class(m) for _, m in layers])
    if len(loaded) != len(layers):
        raise ValueError(
            f"{path}: the file has {len(loaded)} weighted layers, {model_name} has "
            f"{len(layers)}; is it the weights of another architecture?"
        )
    for (ours, module), (theirs, arrays) in zip(layers, loaded, strict=True):
        targets = keras_weights(module)
        if len(arrays) != len(targets):
            raise ValueError(
                f"{path}: layer {theirs!r} has {len(arrays)} weights but {model_name}'s "
                f"{ours!r} expects {len(targets)}."
            )
        for array, (var, kind) in zip(arrays, targets, strict=True):
            value = to_flax(kind, array)
            if value.shape != var.shape:
                raise ValueError(
                    f"{path}: layer {theirs!r} {kind} has shape {tuple(array.shape)} but "
                    f"{model_name}'s {ours!r} needs {tuple(var.shape)} "
                    "(Keras layout); wrong architecture or input channels?"
                )
            var.set_value(value.astype(var.dtype))
