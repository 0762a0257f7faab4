"""Whole saved Keras classifiers in: Sequential and functional graphs, from a `.keras`
file or a legacy full-model `.h5`, evaluated as one pure JAX function.

Only the config JSON and the HDF5 weights are read: nothing is unpickled and no code
runs (a `Lambda` layer is refused like any other unknown layer). The graph is walked
as Keras wrote it: nested `Functional` / `Sequential` models (such as the study's
`Sequential(Xception|VGG16, Flatten, Dense, Dense)`), shared layers and multi-input
merges. The layers understood are in `LAYERS`.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

_MODELS = ("Functional", "Model", "Sequential")
_IDENTITY = ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
             "AlphaDropout", "ActivityRegularization")
#: The Keras layer classes `load_keras_model` evaluates (besides nested models).
LAYERS = ("InputLayer", "Conv2D", "SeparableConv2D", "DepthwiseConv2D",
          "BatchNormalization", "Activation", "ReLU", "Softmax", "MaxPooling2D",
          "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten",
          "Reshape", "Dense", "Add", "Concatenate", "Rescaling", "ZeroPadding2D",
          *_IDENTITY)

_ACTIVATIONS: dict[str, Callable] = {
    "linear": lambda x: x, "relu": jax.nn.relu, "relu6": jax.nn.relu6,
    "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "elu": jax.nn.elu, "selu": jax.nn.selu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False), "swish": jax.nn.silu,
    "silu": jax.nn.silu, "softplus": jax.nn.softplus, "softsign": jax.nn.soft_sign,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
}
# Keras' variables per weighted layer, in its order, and which of them are trainable.
_TRAINABLE = {"gamma", "beta", "kernel", "bias", "depthwise_kernel", "pointwise_kernel"}


def _snake(name: str) -> str:
    """Keras' `naming.to_snake_case` (how a `.keras` file keys a layer by its class)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int | float) else tuple(int(x) for x in v)


def _variables(cls: str, cfg: dict) -> list[str]:
    """The variable kinds a layer of class `cls` holds, in Keras' order."""
    bias = ["bias"] if cfg.get("use_bias", True) else []
    if cls in ("Conv2D", "Dense"):
        return ["kernel", *bias]
    if cls == "SeparableConv2D":
        return ["depthwise_kernel", "pointwise_kernel", *bias]
    if cls == "DepthwiseConv2D":
        return ["depthwise_kernel", *bias]
    if cls == "BatchNormalization":
        return ([*(["gamma"] if cfg.get("scale", True) else []),
                 *(["beta"] if cfg.get("center", True) else []),
                 "moving_mean", "moving_variance"])
    return []


class _Graph:
    """One Keras model config: its layers by name and how they connect."""

    def __init__(self, config: dict):
        self.cls = config["class_name"]
        cfg = config["config"]
        self.name = cfg.get("name", self.cls.lower())
        self.trainable = cfg.get("trainable", True)
        self.layers = []  # (name, class, config, sub-graph or None), in file order
        for layer in cfg["layers"]:
            cls, lcfg = layer["class_name"], layer["config"]
            name = layer.get("name") or lcfg.get("name")
            self.layers.append((name, cls, lcfg, _Graph(layer) if cls in _MODELS else None,
                                layer.get("inbound_nodes", [])))
        if self.cls == "Sequential":
            first = self.layers[0]
            shape = (first[2].get("batch_shape") or first[2].get("batch_input_shape")
                     or cfg.get("build_input_shape"))
            if first[1] == "InputLayer":
                self.layers = self.layers[1:]
            elif shape is None and first[3] is not None:
                shape = [None, *first[3].input_shape]
            self.input_shape = tuple(int(s) for s in shape[1:]) if shape else None
        else:
            inputs = cfg["input_layers"]
            inputs = inputs if isinstance(inputs[0], list) else [inputs]
            outputs = cfg["output_layers"]
            self.outputs = [tuple(o[:3]) for o in
                            (outputs if isinstance(outputs[0], list) else [outputs])]
            self.inputs = [i[0] for i in inputs]
            if len(self.inputs) != 1 or len(self.outputs) != 1:
                raise ValueError(f"model {self.name!r} has {len(self.inputs)} inputs and "
                                 f"{len(self.outputs)} outputs; jaxrobust reads image "
                                 "classifiers with one of each.")
            first = next(la for la in self.layers if la[0] == self.inputs[0])
            shape = first[2].get("batch_shape") or first[2].get("batch_input_shape")
            self.input_shape = tuple(int(s) for s in shape[1:])

    def walk(self):
        """Every (layer name, class, config) of this graph and the graphs inside it."""
        for name, cls, cfg, sub, _ in self.layers:
            yield name, cls, cfg
            if sub is not None:
                yield from sub.walk()

    def last(self):
        """The layer whose output is the model's output: `(class, config, graph)`."""
        name = self.layers[-1][0] if self.cls == "Sequential" else self.outputs[0][0]
        _, cls, cfg, sub, _ = next(la for la in self.layers if la[0] == name)
        return (sub.last() if sub is not None else (cls, cfg))


def _read(path: str):
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


def _keras3_params(graph: _Graph, group) -> dict:
    """Params of `graph` from a `.keras` weights group: layers keyed by class and counter
    within their model, in the model's layer order; `vars/0..n` in Keras' order."""
    params, used = {}, {}
    for name, cls, cfg, sub, _ in graph.layers:
        key = "functional" if cls == "Model" else _snake(cls)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        if sub is not None:
            params[name] = _keras3_params(sub, group["layers"][key])
        elif kinds := _variables(cls, cfg):
            held = group["layers"][key]["vars"] if key in group.get("layers", {}) else {}
            if len(held) != len(kinds):
                raise ValueError(f"layer {name!r} ({cls}) holds {len(held)} arrays in the "
                                 f"file, Keras' {cls} has {len(kinds)} ({', '.join(kinds)}).")
            params[name] = {k: np.asarray(held[str(i)]) for i, k in enumerate(kinds)}
    return params


def _legacy_params(graph: _Graph, group) -> dict:
    """Params of `graph` from a legacy `model_weights` group: one group per top-level
    layer, a nested model's arrays in one list, its trainable variables first (layer by
    layer), then the others (batch-norm statistics, frozen layers), as Keras wrote them."""
    params = {}
    for name, cls, cfg, sub, _ in graph.layers:
        slots = []  # (path, kind, trainable) in the model's variable order
        if sub is not None:
            _slots(sub, (name,), graph.trainable, slots)
        else:
            slots = [((name,), k, graph.trainable and cfg.get("trainable", True)
                      and k in _TRAINABLE) for k in _variables(cls, cfg)]
        if not slots:
            continue
        names = [w.decode() if isinstance(w, bytes) else str(w)
                 for w in group[name].attrs.get("weight_names", [])] if name in group else []
        if len(names) != len(slots):
            raise ValueError(f"layer {name!r} ({cls}) holds {len(names)} arrays in the file; "
                             f"the config's layers need {len(slots)}.")
        ordered = [s for s in slots if s[2]] + [s for s in slots if not s[2]]
        for (where, kind, _), w in zip(ordered, names, strict=True):
            node = params
            for p in where:
                node = node.setdefault(p, {})
            node[kind] = np.asarray(group[name][w])
    return params


def _slots(graph: _Graph, prefix: tuple, trainable: bool, out: list) -> None:
    trainable = trainable and graph.trainable
    for name, cls, cfg, sub, _ in graph.layers:
        if sub is not None:
            _slots(sub, (*prefix, name), trainable, out)
        else:
            on = trainable and cfg.get("trainable", True)
            out += [((*prefix, name), k, on and k in _TRAINABLE) for k in _variables(cls, cfg)]


def _activation(name, where: str) -> Callable:
    if isinstance(name, dict):  # a serialised built-in: {"class_name": "function", ...}
        name = name.get("config", name.get("class_name"))
    if name is None:
        return _ACTIVATIONS["linear"]
    if name not in _ACTIVATIONS:
        raise ValueError(f"{where}: activation {name!r} is not supported; jaxrobust knows "
                         f"{', '.join(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]


def _check(where: str, w: dict, kind: str, shape: tuple) -> jax.Array:
    have = tuple(w[kind].shape)
    if have != tuple(shape):
        raise ValueError(f"{where}: {kind} has shape {have}, the config needs {tuple(shape)}.")
    return w[kind]


def _last(v, y):
    """`v` (C,) or scalar shaped to broadcast along the last axis of `y`."""
    v = jnp.asarray(v, y.dtype)
    return v.reshape((1,) * (y.ndim - 1) + (-1,)) if v.ndim else v


def _pool(x, cfg: dict, init, op):
    size = _pair(cfg.get("pool_size", 2))
    strides = _pair(cfg.get("strides") or size)
    pad = cfg.get("padding", "valid").upper()
    return jax.lax.reduce_window(x, init, op, (1, *size, 1), (1, *strides, 1), pad), size, \
        strides, pad


def _layer(name: str, cls: str, cfg: dict, w: dict, xs: list, strip_softmax: bool):
    """One layer's inference output (Keras' formulas) for its inputs `xs`."""
    where = f"layer {name!r} ({cls})"
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"{where}: data_format {cfg['data_format']!r}; jaxrobust reads "
                         "channels_last models.")
    x = xs[0]
    act = (lambda v: v) if strip_softmax else _activation(cfg.get("activation"), where)
    if cls in ("InputLayer", *_IDENTITY):
        return x
    if cls in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
        size, cin = _pair(cfg["kernel_size"]), x.shape[-1]
        conv = dict(window_strides=_pair(cfg.get("strides", 1)),
                    padding=cfg.get("padding", "valid").upper(),
                    rhs_dilation=_pair(cfg.get("dilation_rate", 1)),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if cls == "Conv2D":
            groups = int(cfg.get("groups", 1))
            k = _check(where, w, "kernel", (*size, cin // groups, cfg["filters"]))
            y = jax.lax.conv_general_dilated(x, k, feature_group_count=groups, **conv)
        else:
            m = int(cfg.get("depth_multiplier", 1))
            k = _check(where, w, "depthwise_kernel", (*size, cin, m))
            y = jax.lax.conv_general_dilated(x, k.reshape(*size, 1, cin * m),
                                             feature_group_count=cin, **conv)
            if cls == "SeparableConv2D":
                p = _check(where, w, "pointwise_kernel", (1, 1, cin * m, cfg["filters"]))
                y = jax.lax.conv_general_dilated(y, p, (1, 1), "VALID",
                                                 dimension_numbers=conv["dimension_numbers"])
        if "bias" in w:
            y = y + _last(_check(where, w, "bias", (y.shape[-1],)), y)
        return act(y)
    if cls == "Dense":
        k = _check(where, w, "kernel", (x.shape[-1], cfg["units"]))
        y = jnp.matmul(x, k, precision="highest")
        return act(y + _last(_check(where, w, "bias", (cfg["units"],)), y) if "bias" in w
                   else y)
    if cls == "BatchNormalization":
        axis = cfg.get("axis", -1)
        if (axis[0] if isinstance(axis, list) else axis) not in (-1, x.ndim - 1):
            raise ValueError(f"{where}: axis {axis}; jaxrobust reads the channel axis (-1).")
        c = (x.shape[-1],)
        inv = jax.lax.rsqrt(_check(where, w, "moving_variance", c) + cfg.get("epsilon", 1e-3))
        if "gamma" in w:
            inv = inv * _check(where, w, "gamma", c)
        y = (x - _last(_check(where, w, "moving_mean", c), x)) * _last(inv, x)
        return y + _last(_check(where, w, "beta", c), x) if "beta" in w else y
    if cls == "Activation":
        return act(x)
    if cls == "Softmax":
        return x if strip_softmax else jax.nn.softmax(x, axis=cfg.get("axis", -1))
    if cls == "ReLU":
        top, slope = cfg.get("max_value"), cfg.get("negative_slope", 0.0) or 0.0
        t = cfg.get("threshold", 0.0) or 0.0
        y = jnp.where(x >= t, x, slope * (x - t))
        return y if top is None else jnp.minimum(y, top)
    if cls == "MaxPooling2D":
        return _pool(x, cfg, -jnp.inf, jax.lax.max)[0]
    if cls == "AveragePooling2D":  # 'same' divides by the window's cells inside the image
        total, size, strides, pad = _pool(x, cfg, 0.0, jax.lax.add)
        ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
        count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, *size, 1),
                                      (1, *strides, 1), pad)
        return total / count
    if cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        f = jnp.mean if cls == "GlobalAveragePooling2D" else jnp.max
        return f(x, axis=(1, 2), keepdims=bool(cfg.get("keepdims", False)))
    if cls == "Flatten":
        return x.reshape(x.shape[0], -1)
    if cls == "Reshape":
        return x.reshape(x.shape[0], *cfg["target_shape"])
    if cls == "Add":
        return sum(xs[1:], xs[0])
    if cls == "Concatenate":
        return jnp.concatenate(xs, axis=cfg.get("axis", -1))
    if cls == "Rescaling":
        return x * _last(cfg.get("scale", 1.0), x) + _last(cfg.get("offset", 0.0), x)
    if cls == "ZeroPadding2D":
        p = cfg.get("padding", 1)
        (t, b), (left, r) = ((p, p), (p, p)) if isinstance(p, int) else \
            [(q, q) if isinstance(q, int) else tuple(q) for q in p]
        return jnp.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
    raise AssertionError(cls)  # refused before evaluation


def _history(args) -> list[tuple]:
    """The `(layer, node, tensor)` a node's arguments name, in order (Keras 3's
    `__keras_tensor__` dicts, or Keras 2's `[name, node, tensor, kwargs]` lists)."""
    if isinstance(args, dict):
        if args.get("class_name") == "__keras_tensor__":
            return [tuple(args["config"]["keras_history"])]
        return [h for v in args.values() for h in _history(v)]
    if isinstance(args, list):
        if len(args) >= 3 and isinstance(args[0], str) and isinstance(args[1], int):
            return [tuple(args[:3])]
        return [h for v in args for h in _history(v)]
    return []


def _run(graph: _Graph, params: dict, x, strip_softmax: bool):
    """The output of `graph` for input `x`; the output layer's softmax left out when
    `strip_softmax`."""
    if graph.cls == "Sequential":
        for i, (name, cls, cfg, sub, _) in enumerate(graph.layers):
            strip = strip_softmax and i == len(graph.layers) - 1
            x = (_run(sub, params.get(name, {}), x, strip) if sub is not None
                 else _layer(name, cls, cfg, params.get(name, {}), [x], strip))
        return x
    by_name = {la[0]: la for la in graph.layers}
    done: dict[tuple, object] = {(graph.inputs[0], 0): x}

    def out(name: str, node: int):
        if (name, node) not in done:
            _, cls, cfg, sub, inbound = by_name[name]
            node_cfg = inbound[node]
            args = node_cfg.get("args", node_cfg) if isinstance(node_cfg, dict) else node_cfg
            xs = [out(n, k) for n, k, _ in _history(args)]
            strip = strip_softmax and (name, node) == graph.outputs[0][:2]
            done[(name, node)] = (_run(sub, params.get(name, {}), xs[0], strip)
                                  if sub is not None else
                                  _layer(name, cls, cfg, params.get(name, {}), xs, strip))
        return done[(name, node)]

    return out(*graph.outputs[0][:2])


def load_keras_model(path: str):
    """A saved Keras classifier as `(apply_fn, params, info)`.

    Args:
        path: a `.keras` file (`model.save("x.keras")`) or a legacy full-model `.h5`
            (`model.save("x.h5")`): a Sequential or functional image classifier with one
            input and one output, built from the layers in `LAYERS` and nested models
            (the study's `Sequential(Xception|VGG16, Flatten, Dense(relu), Dense(softmax))`
            among them), channels last.

    Returns:
        `apply_fn(params, images (N, H, W, C)) -> logits (N, K)`: the model's inference
        output, with a final softmax left out (the last `Dense`'s activation, an
        `Activation('softmax')` or a `Softmax` layer), so `softmax(logits)` equals Keras'
        `predict` (tested on the study's classifiers and a functional graph); any other
        final activation (linear, sigmoid, ...) is kept and `info["activation"]` names
        it. Images are passed as Keras got them, with no preprocessing added, except that
        a gray (C = 1) batch is repeated to a 3-channel input, as the study did.
        `params` is the nested `{layer: {variable: array}}` state, batch-norm statistics
        included (so `count_params` equals Keras' `count_params()`). `info` has
        `name`, `input_shape` (H, W, C), `num_classes`, `activation` and `backbone` (the
        first nested model's name, or the model's own).

    Raises:
        ValueError: a missing or unreadable file, unsupported layers (all named),
            activations or options, or weights whose count or shape the config does not
            fit; all before any compute.
    """
    if not os.path.isfile(path):
        raise ValueError(f"Keras model {path} does not exist; pass a .keras or full-model "
                         ".h5 file.")
    config, weights, kind = _read(path)
    if config.get("class_name") not in _MODELS:
        raise ValueError(f"{path}: a {config.get('class_name')} is not a Keras model config.")
    try:
        graph = _Graph(config)
    except (KeyError, IndexError, TypeError, StopIteration) as e:
        raise ValueError(f"{path}: cannot follow the model config ({type(e).__name__}: "
                         f"{e}); is it a Sequential or functional model?") from None
    unknown = sorted({cls for _, cls, _ in graph.walk()} - {*LAYERS, *_MODELS})
    if unknown:
        raise ValueError(f"{path}: unsupported layers {', '.join(unknown)}; jaxrobust reads "
                         f"{', '.join(LAYERS)} and nested models.")
    with weights:
        try:
            params = (_keras3_params(graph, weights) if kind == "keras"
                      else _legacy_params(graph, weights["model_weights"]))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    cls, cfg = graph.last()
    activation = ("softmax" if cls == "Softmax" else
                  cfg.get("activation", "linear") if cls in ("Dense", "Activation") else
                  "linear")
    strip = activation == "softmax"
    channels = graph.input_shape[-1]

    def apply_fn(params, images):
        if images.shape[-1] == 1 and channels == 3:
            images = jnp.repeat(images, 3, axis=-1)
        if images.shape[-1] != channels:
            raise ValueError(f"{os.path.basename(path)} takes images of {channels} channels "
                             f"(or gray ones when it takes 3), not {tuple(images.shape)}.")
        return _run(graph, params, jnp.asarray(images, jnp.float32), strip)

    try:
        out = jax.eval_shape(apply_fn, params,
                             jax.ShapeDtypeStruct((1, *graph.input_shape), jnp.float32))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if out.ndim != 2:
        raise ValueError(f"{path}: the model's output has shape {out.shape[1:]} per image; "
                         "jaxrobust reads classifiers with a (K,) output.")
    params = jax.tree.map(jnp.asarray, params)
    nested = next((sub.name for _, _, _, sub, _ in graph.layers if sub is not None), None)
    info = {"name": graph.name, "backbone": nested or graph.name,
            "input_shape": graph.input_shape, "num_classes": int(out.shape[1]),
            "activation": activation}
    return apply_fn, params, info
