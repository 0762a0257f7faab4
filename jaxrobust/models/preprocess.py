"""Keras' `preprocess_input`, for images that stay in [0, 1] at every public boundary.

The ImageNet backbones were trained on preprocessed inputs: Xception in "tf" mode
(`x / 127.5 - 1`, so [-1, 1]) and VGG16 in "caffe" mode (RGB -> BGR, then the
ImageNet channel means subtracted, in 0-255 units). jaxrobust keeps images in [0, 1]
everywhere, so a model built with `preprocess=` applies the mode inside its forward
pass: `preprocess(x, mode)` equals `keras.applications.<backbone>.preprocess_input(
255 * x)` (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Accepted modes: none, Keras' two image modes, `keras` (the backbone's own) and
#: `auto` (`keras` for a model with pretrained weights, else `none`).
MODES = ("none", "tf", "caffe", "keras", "auto")
#: The mode `keras.applications` uses for each backbone (`keras` resolves to it).
KERAS_MODE = {"xception": "tf", "vgg16": "caffe", "small_cnn": "none"}
#: ImageNet channel means in BGR order, 0-255 units (Keras' caffe mode).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def resolve(mode: str, backbone: str, *, pretrained: bool = False) -> str:
    """`mode` as applied: `keras` becomes the backbone's Keras mode, and `auto` that
    mode for a `pretrained` backbone, else `none`.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"preprocess {mode!r}; use one of {', '.join(MODES)}.")
    if mode == "auto":
        mode = "keras" if pretrained else "none"
    return KERAS_MODE.get(backbone, "none") if mode == "keras" else mode


def preprocess(images: jax.Array, mode: str) -> jax.Array:
    """`images (N, H, W, 3)` in [0, 1] as Keras' `preprocess_input(255 * images)`.

    `tf`: `255 x / 127.5 - 1`; `caffe`: channels reversed (RGB -> BGR), then
    `255 x - mean` per channel (`CAFFE_MEAN_BGR`); `none`: unchanged.

    Raises:
        ValueError: an unknown mode, or `caffe` on images without 3 channels.
    """
    if mode == "none":
        return images
    images = jnp.asarray(images)
    x = images * jnp.asarray(255.0, images.dtype)
    if mode == "tf":
        return x / jnp.asarray(127.5, images.dtype) - jnp.asarray(1.0, images.dtype)
    if mode == "caffe":
        if images.shape[-1] != 3:
            raise ValueError(f"caffe preprocessing takes RGB images, got {images.shape[-1]} "
                             "channels.")
        mean = jnp.asarray(CAFFE_MEAN_BGR, images.dtype).reshape((1,) * (x.ndim - 1) + (3,))
        return x[..., ::-1] - mean
    raise ValueError(f"preprocess {mode!r}; use one of {', '.join(MODES[:3])}.")
