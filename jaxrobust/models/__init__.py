"""Flax (NNX) models and the pure functions the engines consume.

Backbones reproduce `keras.applications.VGG16` and `Xception` with
`include_top=False` layer for layer, so Keras weight files load into them
(`load_keras_weights`); `small_cnn` suits 28x28 digits. `get` puts the corruption
study's head on a backbone.

Flax NNX, not Linen: the Flax documentation recommends NNX for new code (Linen is
kept for existing projects). Modules hold their variables; `pure` turns a module
into the `(apply_fn, params)` pair that sweep, attribution and counterfactual code
take (`nnx.split` once in eval mode, `nnx.merge` inside the function), so those
engines never import Flax and any JAX model works with them.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxrobust import models
    >>> net = models.get("small_cnn", num_classes=10, input_shape=(28, 28, 1))
    >>> apply_fn, params = models.pure(net)
    >>> apply_fn(params, jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrobust.models import preprocess
from jaxrobust.models.classifier import Classifier
from jaxrobust.models.keras_export import save_keras_weights
from jaxrobust.models.keras_import import assign_keras_weights, read_keras_weights
from jaxrobust.models.keras_model import load_keras_model
from jaxrobust.models.layers import SeparableConv
from jaxrobust.models.preprocess import resolve as resolve_preprocess
from jaxrobust.models.small_cnn import SmallCNN
from jaxrobust.models.vgg import VGG16
from jaxrobust.models.xception import Xception

_BACKBONES: dict[str, Callable[..., nnx.Module]] = {
    "vgg16": VGG16,
    "xception": Xception,
    "small_cnn": SmallCNN,
}


def names() -> list[str]:
    """The backbone names `get` accepts."""
    return list(_BACKBONES)


def backbone(name: str, *, in_channels: int = 3, width: float = 1.0, seed: int = 0,
             bn_momentum: float = 0.99) -> nnx.Module:
    """A freshly initialised backbone (`include_top=False` network).

    Raises:
        ValueError: unknown name.
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(_BACKBONES)}.")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}.")
    return _BACKBONES[name](in_channels=in_channels, width=width, bn_momentum=bn_momentum,
                            rngs=nnx.Rngs(seed))


def feature_shape(module: nnx.Module, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Shape of one image's features, found with `jax.eval_shape` (nothing allocated)."""
    graphdef, state = nnx.split(module)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                         jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    return tuple(out.shape[1:])


#: The smallest image side each backbone takes (Keras' own limits).
MIN_SIZE = {"xception": 71, "vgg16": 32, "small_cnn": 4}


def get(name: str, num_classes: int, *, input_shape: tuple[int, int, int],
        width: float = 1.0, hidden: int = 1028, seed: int = 0,
        bn_momentum: float = 0.99, preprocess: str = "none") -> Classifier:
    """A backbone with the study's head (Flatten, Dense(hidden, relu), Dense(num_classes)).

    Args:
        name: `vgg16`, `xception` or `small_cnn`.
        num_classes: number of output logits.
        input_shape: `(H, W, C)` of one image; C = 1 images are repeated to 3 channels
            for the ImageNet backbones.
        width: multiplier on every backbone layer's filters (1.0 = Keras' network).
        hidden: units of the hidden dense layer (the study used 1028).
        seed: initialisation seed.
        bn_momentum: batch-norm momentum in training (Keras: 0.99; short runs want 0.9).
        preprocess: Keras' `preprocess_input` inside the forward pass: `none`, `tf`
            (Xception's: [-1, 1]), `caffe` (VGG16's: BGR, ImageNet means subtracted,
            0-255) or `keras` (the backbone's own mode); inputs stay in [0, 1].

    Raises:
        ValueError: an unknown name or preprocess mode, or images too small.
    """
    mode = resolve_preprocess(preprocess, name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C), got {input_shape}.")
    in_channels = 1 if name == "small_cnn" and input_shape[-1] == 1 else 3
    if input_shape[-1] not in (1, in_channels):
        in_channels = input_shape[-1]
    net = backbone(name, in_channels=in_channels, width=width, seed=seed,
                   bn_momentum=bn_momentum)
    features = feature_shape(net, input_shape)
    if 0 in features:
        raise ValueError(f"{name} reduces {input_shape[0]}x{input_shape[1]} images to nothing "
                         f"(features {features}); use larger images (data.image_size) or "
                         "small_cnn.")
    return Classifier(net, feature_shape=features, num_classes=num_classes, hidden=hidden,
                      preprocess=mode, rngs=nnx.Rngs(seed + 1))


def pure(module: nnx.Module, *, train: bool = False):
    """`(apply_fn, params)` for a module: `apply_fn(params, images) -> outputs`.

    `params` is the module's whole state (parameters and batch-norm statistics), a
    pytree of arrays. In eval mode (the default) batch norm uses its running
    statistics, so `apply_fn` is a pure function that `jit`, `vmap` and `grad` take.
    Modules of the same architecture and mode get the same `apply_fn` object, so a
    jitted call of it compiles once.
    """
    if train:
        module.train()
    else:
        module.eval()
    graphdef, params = nnx.split(module)
    return _apply_fn(graphdef), params


@functools.lru_cache(maxsize=64)
def _apply_fn(graphdef) -> Callable:
    """One apply function per graph definition (graph definitions compare by
    structure): `pure` on the same architecture, for instance after every training
    epoch, returns the same function object, so `jax.jit` of it finds its compiled
    program instead of tracing and compiling the network again."""

    def apply_fn(params, images):
        return nnx.merge(graphdef, params)(images)

    return apply_fn


def count_params(params) -> int:
    """Number of scalars in a params pytree (Keras' `count_params()` for a backbone)."""
    return int(sum(x.size for x in jax.tree.leaves(params)))


#: The notop weights files `keras.applications` caches (in ~/.keras/models/).
KERAS_NOTOP = {"xception": "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
               "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"}


def check_weights_config(name: str, path: str, *, width: float, where: str = "model") -> None:
    """Checks that `path` can initialise backbone `name` before any work.

    Raises:
        ValueError: a backbone without Keras weights, a width other than 1.0, or a
            missing file; the message names the file expected.
    """
    if name not in KERAS_NOTOP:
        raise ValueError(f"config: {where}.weights: Keras weights exist for "
                         f"{', '.join(KERAS_NOTOP)}, not {name}; drop {where}.weights.")
    expected = (f"Keras' {name} notop weights ({KERAS_NOTOP[name]}, or a .weights.h5 of "
                f"keras.applications.{'VGG16' if name == 'vgg16' else 'Xception'}"
                "(include_top=False), 3 input channels)")
    if width != 1.0:
        raise ValueError(f"config: {where}.weights: {expected} fit width 1.0, but "
                         f"{where}.width is {width}; set it to 1.0.")
    if not os.path.isfile(os.path.expanduser(path)):
        raise ValueError(f"config: {where}.weights: {path} does not exist; place "
                         f"{expected} there (jaxrobust downloads nothing).")


def load_keras_weights(name: str, path: str, *, input_shape: tuple[int, int, int]):
    """Loads a Keras weights file into the matching Flax backbone.

    Args:
        name: `vgg16` or `xception`.
        path: a Keras 3 `.weights.h5` (from `model.save_weights`) or a legacy `.h5`
            notop file as `keras.applications` downloads it (e.g.
            `xception_weights_tf_dim_ordering_tf_kernels_notop.h5`).
        input_shape: `(H, W, 3)` the features will be computed for.

    Returns:
        `(apply_fn, params)`: `apply_fn(params, images (N, H, W, 3 or 1))` returns the
        feature maps Keras' `include_top=False` model outputs; `params` holds every
        variable, batch-norm statistics included.

    Raises:
        ValueError: unknown model, or a file that does not fit (naming the first
            mismatched layer and shapes).
    """
    if name not in ("vgg16", "xception"):
        raise ValueError(f"Keras weights exist for vgg16 and xception, not {name!r}.")
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError(f"input_shape must be (H, W, 3) (or 1 channel), got {input_shape}.")
    net = backbone(name, in_channels=3)
    assign_keras_weights(net, path, model_name=name)
    feature_shape(net, input_shape)  # fails early on an input the network cannot take
    return pure(net)


__all__ = [
    "KERAS_NOTOP",
    "MIN_SIZE",
    "check_weights_config",
    "preprocess",
    "resolve_preprocess",
    "load_keras_model",
    "save_keras_weights",
    "VGG16",
    "Classifier",
    "SeparableConv",
    "SmallCNN",
    "Xception",
    "backbone",
    "count_params",
    "feature_shape",
    "get",
    "load_keras_weights",
    "names",
    "pure",
    "read_keras_weights",
]
