"""VGG16 without its top, layer for layer `keras.applications.VGG16(include_top=False)`."""

from __future__ import annotations

import jax
from flax import nnx

from jaxrobust.models.layers import check_input, conv, max_pool

#: (filters, convs) of the five VGG16 blocks.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class VGG16(nnx.Module):
    """VGG16 feature extractor: 13 3x3 'same' convs with ReLU, 2x2 max pools.

    `(N, H, W, C)` -> `(N, H // 32, W // 32, 512 * width)`. `width` scales every
    layer's filters (1.0 is Keras' network; smaller ones train in minutes on a CPU).
    """

    def __init__(self, *, in_channels: int = 3, width: float = 1.0,
                 bn_momentum: float = 0.99, rngs: nnx.Rngs):
        del bn_momentum  # no batch norm in this network
        self.in_channels = in_channels
        convs, names = [], []
        features = in_channels
        for b, (filters, count) in enumerate(VGG16_BLOCKS, start=1):
            out = max(1, round(filters * width))
            for c in range(1, count + 1):
                convs.append(conv(features, out, (3, 3), padding="SAME", rngs=rngs))
                names.append(f"block{b}_conv{c}")
                features = out
        self.convs = nnx.List(convs)
        self.keras_names = tuple(names)
        self.out_features = features

    def __call__(self, x: jax.Array) -> jax.Array:
        x = check_input(x, in_channels=self.in_channels, name="vgg16")
        i = 0
        for _, count in VGG16_BLOCKS:
            for _ in range(count):
                x = nnx.relu(self.convs[i](x))
                i += 1
            x = max_pool(x, 2, 2, "VALID")
        return x

    def keras_layers(self):
        """`(keras_layer_name, block)` pairs in Keras' layer order."""
        return list(zip(self.keras_names, self.convs, strict=True))
