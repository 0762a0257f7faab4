"""Whole saved Keras classifiers in: the study's `Sequential(backbone, Flatten, Dense,
Dense)`, from a `.keras` file or a legacy full-model `.h5`.

Only the config JSON and the HDF5 weights are read: nothing is unpickled and no code
runs. The layouts understood are the study's classifier: an optional `InputLayer`, a
nested `Functional` VGG16 or Xception (`include_top=False`, as `keras.applications`
builds it), `Flatten`, `Dense(hidden, relu)` and `Dense(K)` (softmax or linear). Any
other layer is refused, by name.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from jaxrobust.models.keras_import import _SNAKE, _keras3_layers, keras_class
from jaxrobust.models.layers import keras_weights, to_flax

_ACCEPTED = ("InputLayer", "Functional", "Flatten", "Dense", "Dropout")
_NON_TRAINABLE = ("moving_mean", "moving_variance")


def _read_config(path: str):
    """`(config dict, h5py.File of the weights, kind)` of a `.keras` or full `.h5` file."""
    import h5py

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "config.json" not in names or "model.weights.h5" not in names:
                raise ValueError(f"{path}: a .keras file holds config.json and "
                                 "model.weights.h5; this one does not.")
            config = json.loads(z.read("config.json"))
            weights = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
        return config, weights, "keras"
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"cannot read {path} as a .keras zip or HDF5 ({e}).") from None
    if "model_config" not in f.attrs or "model_weights" not in f:
        f.close()
        raise ValueError(f"{path} is not a full-model Keras .h5 (no model_config); a weights "
                         "file goes to models[].weights instead.")
    config = f.attrs["model_config"]
    return json.loads(config.decode() if isinstance(config, bytes) else config), f, "h5"


def _layout(config: dict, path: str) -> dict:
    """The backbone name, input shape, hidden units, classes and final activation."""
    if config.get("class_name") != "Sequential":
        raise ValueError(f"{path}: a {config.get('class_name')} model; jaxrobust reads the "
                         "study's Sequential(backbone, Flatten, Dense, Dense).")
    layers = config["config"]["layers"]
    unknown = sorted({la["class_name"] for la in layers} - set(_ACCEPTED))
    if unknown:
        raise ValueError(f"{path}: unsupported layers {', '.join(unknown)}; jaxrobust reads "
                         f"{', '.join(_ACCEPTED)} (the study's classifier).")
    kinds = [la["class_name"] for la in layers if la["class_name"] not in ("InputLayer",
                                                                           "Dropout")]
    if kinds != ["Functional", "Flatten", "Dense", "Dense"]:
        raise ValueError(f"{path}: layers {kinds}; jaxrobust reads the study's "
                         "[Functional backbone, Flatten, Dense, Dense].")
    backbone = next(la for la in layers if la["class_name"] == "Functional")["config"]
    name = backbone.get("name", "")
    if name not in ("vgg16", "xception"):
        raise ValueError(f"{path}: the nested model is {name!r}; jaxrobust reads "
                         "keras.applications' vgg16 and xception.")
    shape = backbone["layers"][0]["config"].get("batch_shape") or \
        backbone["layers"][0]["config"].get("batch_input_shape")
    dense = [la for la in layers if la["class_name"] == "Dense"]
    if dense[0]["config"].get("activation") != "relu":
        raise ValueError(f"{path}: the hidden Dense has activation "
                         f"{dense[0]['config'].get('activation')!r}; the study's is relu.")
    return {"backbone": name, "input_shape": tuple(int(s) for s in shape[1:]),
            "hidden": int(dense[0]["config"]["units"]),
            "num_classes": int(dense[1]["config"]["units"]),
            "activation": dense[1]["config"].get("activation", "linear"),
            "dense_names": [d["config"]["name"] for d in dense], "backbone_layer": name}


def _legacy_arrays(group) -> dict[str, dict[str, np.ndarray]]:
    """`{layer: {kind: array}}` from a legacy group's `weight_names` (`a/b/kind[:0]`)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for w in group.attrs.get("weight_names", []):
        w = w.decode() if isinstance(w, bytes) else str(w)
        parts = w.split(":")[0].split("/")
        out.setdefault(parts[-2], {})[parts[-1]] = np.asarray(group[w])
    return out


def _legacy_backbone(group, blocks) -> list[list[np.ndarray]]:
    """Per block, its arrays from a legacy nested-model group, by order: Keras wrote the
    model's trainable weights (layer by layer), then its non-trainable ones (batch
    norm's moving statistics); layer names are not used (unnamed layers get session
    counters)."""
    names = [w.decode() if isinstance(w, bytes) else str(w)
             for w in group.attrs.get("weight_names", [])]
    values = [np.asarray(group[w]) for w in names]
    kinds = [[k for _, k in keras_weights(b)] for _, b in blocks]
    n_trainable = sum(k not in _NON_TRAINABLE for ks in kinds for k in ks)
    if len(values) != sum(map(len, kinds)):
        return [None] * len(blocks)
    trainable, frozen = iter(values[:n_trainable]), iter(values[n_trainable:])
    return [[next(frozen) if k in _NON_TRAINABLE else next(trainable) for k in ks]
            for ks in kinds]


def load_keras_model(path: str):
    """A saved Keras classifier as `(apply_fn, params, info)`.

    Args:
        path: a `.keras` file (`model.save("x.keras")`) or a legacy full-model `.h5`
            (`model.save("x.h5")`) of the study's classifier.

    Returns:
        `apply_fn(params, images (N, H, W, C) in the file's input units) -> logits
        (N, K)`: the last Dense before its activation, so `softmax(logits)` equals
        Keras' `predict` when the file's last activation is softmax (tested); `params`
        the whole state; `info` with `input_shape`, `num_classes`, `activation`,
        `backbone` and `hidden`. The images are passed as Keras got them: no
        preprocessing is added.

    Raises:
        ValueError: a missing or unreadable file, another architecture or layer (named),
            or weights that do not fit.
    """
    from jaxrobust import models

    if not os.path.isfile(path):
        raise ValueError(f"Keras model {path} does not exist; pass a .keras or full-model "
                         ".h5 file.")
    config, weights, kind = _read_config(path)
    with weights:
        info = _layout(config, path)
        clf = models.get(info["backbone"], info["num_classes"], input_shape=info["input_shape"],
                         hidden=info["hidden"])
        blocks = clf.backbone.keras_layers()
        if kind == "keras":
            found = _keras3_layers(weights["layers"]["functional"]["layers"])
            seen: dict[str, int] = {}
            arrays = []
            for _, block in blocks:
                snake = _SNAKE[keras_class(block)]
                k = seen.get(snake, 0)
                seen[snake] = k + 1
                arrays.append(found.get(snake if k == 0 else f"{snake}_{k}"))
            top = _keras3_layers(weights["layers"])  # named by class and counter
            head = [top.get("dense"), top.get("dense_1")]
        else:
            group = weights["model_weights"]
            arrays = _legacy_backbone(group[info["backbone_layer"]], blocks)
            head = []
            for n in info["dense_names"]:
                dense = _legacy_arrays(group[n]).get(n, {})
                head.append([dense.get("kernel"), dense.get("bias")])
        for (name, block), values in zip([*blocks, ("dense", clf.hidden),
                                          ("dense_1", clf.logits)], [*arrays, *head],
                                         strict=True):
            targets = keras_weights(block)
            if values is None or len(values) != len(targets) or any(v is None for v in values):
                raise ValueError(f"{path}: no weights fit layer {name!r} of "
                                 f"{info['backbone']}; is it another architecture?")
            for value, (var, wkind) in zip(values, targets, strict=True):
                value = to_flax(wkind, value)
                if value.shape != var.shape:
                    raise ValueError(f"{path}: layer {name!r} {wkind} has shape "
                                     f"{tuple(value.shape)}, the model needs "
                                     f"{tuple(var.shape)}.")
                var.set_value(value.astype(var.dtype))
    apply_fn, params = models.pure(clf)
    info = {k: info[k] for k in ("backbone", "input_shape", "hidden", "num_classes",
                                 "activation")}
    return apply_fn, params, info
