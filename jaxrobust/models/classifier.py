"""The corruption study's classifier: backbone -> Flatten -> Dense(hidden, relu) -> Dense."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrobust.models.layers import dense
from jaxrobust.models.preprocess import preprocess


class Classifier(nnx.Module):
    """A backbone with the study's head; returns logits `(N, num_classes)`.

    The study used `include_top=False` backbones followed by Flatten, Dense(1028,
    relu) and Dense(4, softmax); the softmax lives in the loss here, so the model
    returns logits, as attribution methods need. With `preprocess` ("tf", "caffe"),
    Keras' `preprocess_input` runs first, so the model takes [0, 1] images like every
    other (`jaxrobust.models.preprocess`).
    """

    def __init__(self, backbone: nnx.Module, *, feature_shape: tuple[int, int, int],
                 num_classes: int, hidden: int = 1028, preprocess: str = "none",
                 rngs: nnx.Rngs):
        self.backbone = backbone
        self.preprocess = preprocess  # Keras' preprocess_input mode, applied first
        flat = feature_shape[0] * feature_shape[1] * feature_shape[2]
        self.hidden = dense(flat, hidden, rngs=rngs)
        self.logits = dense(hidden, num_classes, rngs=rngs)
        self.num_classes = num_classes

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.preprocess != "none":  # images arrive in [0, 1]; gray repeated first
            x = preprocess(jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x,
                           self.preprocess)
        features = self.backbone(x)
        h = nnx.relu(self.hidden(features.reshape(features.shape[0], -1)))
        return self.logits(h)
