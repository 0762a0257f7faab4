"""Writing jaxrobust models back to Keras: the inverse of `keras_import`.

`save_keras_weights(module, path)` writes a legacy (Keras 2 layout) `.h5` weights
file, which Keras 3 reads with `model.load_weights(path)`:

* a backbone (`models.backbone("vgg16" | "xception")`, width 1.0) loads into
  `keras.applications.VGG16 / Xception(include_top=False, weights=None, input_shape=...)`;
* a classifier (`models.get(...)`, the study's head) loads into
  `keras.Sequential([<that backbone>, Flatten(), Dense(hidden, "relu"), Dense(K)])`
  (`Dense(K, "softmax")` for probabilities: the weights are the same).

Keras reads legacy files by layer order, and a layer's weights as its trainable
weights followed by its non-trainable ones (batch norm's moving statistics), which
is the order written here. Round trips through Keras are tested.
"""

from __future__ import annotations

import numpy as np

from jaxrobust.models.layers import keras_weights

_NON_TRAINABLE = ("moving_mean", "moving_variance")


def _to_keras(kind: str, value) -> np.ndarray:
    """A Flax variable's value in the Keras layout of its weight."""
    value = np.asarray(value, np.float32)
    return np.swapaxes(value, 2, 3) if kind == "depthwise_kernel" else value


def _layer_weights(module) -> list[tuple[str, np.ndarray]]:
    """`(kind, Keras array)` of one block, trainable first (Keras' legacy order)."""
    pairs = [(kind, _to_keras(kind, var.get_value())) for var, kind in keras_weights(module)]
    return ([p for p in pairs if p[0] not in _NON_TRAINABLE]
            + [p for p in pairs if p[0] in _NON_TRAINABLE])


def _groups(module) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """The file's layer groups: `(layer name, [(weight name, array)])`."""
    from jaxrobust.models.vgg import VGG16
    from jaxrobust.models.xception import Xception

    keras_backbones = (VGG16, Xception)
    if isinstance(module, keras_backbones):  # a backbone: one group per weighted layer
        return [(name, [(f"{name}/{kind}:0", a) for kind, a in _layer_weights(block)])
                for name, block in module.keras_layers()]
    if isinstance(getattr(module, "backbone", None), keras_backbones):
        # a classifier: the nested backbone is one layer (all its trainable weights,
        # then all its non-trainable ones), then the two Dense layers of the head
        name = type(module.backbone).__name__.lower()
        blocks = [(n, _layer_weights(b)) for n, b in module.backbone.keras_layers()]
        trainable = [(f"{n}/{k}:0", a) for n, ws in blocks for k, a in ws
                     if k not in _NON_TRAINABLE]
        frozen = [(f"{n}/{k}:0", a) for n, ws in blocks for k, a in ws if k in _NON_TRAINABLE]
        head = [(layer, [(f"{layer}/{kind}:0", a) for kind, a in _layer_weights(dense)])
                for layer, dense in (("dense", module.hidden), ("dense_1", module.logits))]
        return [(name, trainable + frozen), *head]
    raise ValueError(f"save_keras_weights takes a vgg16 / xception backbone or a classifier "
                     f"built on one, got {type(module).__name__}.")


def save_keras_weights(module, path: str) -> str:
    """Writes `module`'s weights to `path` as a legacy Keras `.h5` weights file.

    Args:
        module: a `vgg16` / `xception` backbone or a `Classifier` built on one (an nnx
            module; batch-norm statistics are written as Keras' moving statistics).
        path: the `.h5` file to write (written whole or not at all).

    Returns:
        `path`.

    Raises:
        ValueError: a module with no Keras counterpart (`small_cnn`), or h5py missing.
    """
    try:
        import h5py
    except ImportError as e:
        raise ValueError("writing Keras weights needs h5py: pip install "
                         "'jaxrobust[keras]'.") from e
    from jaxrobust import _io

    groups = _groups(module)
    with _io.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n, _ in groups])
        f.attrs["backend"] = b"jax"
        f.attrs["keras_version"] = b"3"
        for name, weights in groups:
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([w.encode() for w, _ in weights], dtype="S")
            for w, a in weights:
                g.create_dataset(w, data=a)
    return path
