"""A small CNN for 28x28 digits (the attribution study's kind of model)."""

from __future__ import annotations

import jax
from flax import nnx

from jaxrobust.models.layers import check_input, conv, conv_relu_pool, max_pool


class SmallCNN(nnx.Module):
    """Two 3x3 conv + ReLU + 2x2 max-pool stages: `(N, H, W, C)` -> `(N, H/4, W/4, 64w)`."""

    def __init__(self, *, in_channels: int = 1, width: float = 1.0,
                 bn_momentum: float = 0.99, rngs: nnx.Rngs):
        del bn_momentum  # no batch norm in this network
        self.in_channels = in_channels
        c1, c2 = max(1, round(32 * width)), max(1, round(64 * width))
        self.conv1 = conv(in_channels, c1, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = conv(c1, c2, (3, 3), padding="SAME", rngs=rngs)
        self.out_features = c2

    def __call__(self, x: jax.Array) -> jax.Array:
        x = check_input(x, in_channels=self.in_channels, name="small_cnn")
        x = conv_relu_pool(self.conv1, x)
        return max_pool(nnx.relu(self.conv2(x)), 2, 2, "VALID")

    def keras_layers(self):
        return [("conv1", self.conv1), ("conv2", self.conv2)]
