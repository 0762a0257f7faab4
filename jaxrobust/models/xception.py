"""Xception without its top, layer for layer `keras.applications.Xception(include_top=False)`."""

from __future__ import annotations

import jax
from flax import nnx

from jaxrobust.models.layers import SeparableConv, check_input, conv, max_pool
from jaxrobust.models.layers import batch_norm as _batch_norm


class Xception(nnx.Module):
    """Xception feature extractor (Chollet 2017), as Keras builds it.

    Entry flow: two valid 3x3 convs (the first with stride 2), then three blocks of
    separable convs with a strided 1x1 residual branch and a 3x3/2 'same' max pool;
    middle flow: eight residual blocks of three separable convs; exit flow: one
    residual block and two separable convs with ReLU. Batch norm uses Keras' epsilon
    (1e-3) and momentum (0.99); convs have no bias.

    `(N, H, W, C)` with `H, W >= 71` -> `(N, H', W', 2048 * width)`, e.g. 71 -> 3,
    174 -> 6, 299 -> 10.

    References:
        Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", 2017.
    """

    def __init__(self, *, in_channels: int = 3, width: float = 1.0,
                 bn_momentum: float = 0.99, rngs: nnx.Rngs):
        self.in_channels = in_channels

        def batch_norm(features, rngs):
            return _batch_norm(features, rngs, bn_momentum)

        def n(c):
            return max(1, round(c * width))

        order = []  # (keras name, module) in Keras' layer order

        def add(name, module):
            order.append((name, module))
            return module

        self.conv1 = add("block1_conv1", conv(in_channels, n(32), (3, 3), strides=(2, 2),
                                              padding="VALID", use_bias=False, rngs=rngs))
        self.bn1 = add("block1_conv1_bn", batch_norm(n(32), rngs))
        self.conv2 = add("block1_conv2", conv(n(32), n(64), (3, 3), padding="VALID",
                                              use_bias=False, rngs=rngs))
        self.bn2 = add("block1_conv2_bn", batch_norm(n(64), rngs))

        def strided_block(b, c_in, c_mid, c_out):
            seps = [add(f"block{b}_sepconv1", SeparableConv(c_in, c_mid, rngs=rngs)),
                    add(f"block{b}_sepconv1_bn", batch_norm(c_mid, rngs)),
                    add(f"block{b}_sepconv2", SeparableConv(c_mid, c_out, rngs=rngs)),
                    add(f"block{b}_sepconv2_bn", batch_norm(c_out, rngs))]
            res = [add(f"block{b}_residual", conv(c_in, c_out, (1, 1), strides=(2, 2),
                                                  padding="SAME", use_bias=False, rngs=rngs)),
                   add(f"block{b}_residual_bn", batch_norm(c_out, rngs))]
            return nnx.List([nnx.List(seps), nnx.List(res)])

        self.entry = nnx.List([strided_block(2, n(64), n(128), n(128)),
                               strided_block(3, n(128), n(256), n(256)),
                               strided_block(4, n(256), n(728), n(728))])
        middle = []
        for b in range(5, 13):
            layers = []
            for i in (1, 2, 3):
                layers.append(add(f"block{b}_sepconv{i}", SeparableConv(n(728), n(728), rngs=rngs)))
                layers.append(add(f"block{b}_sepconv{i}_bn", batch_norm(n(728), rngs)))
            middle.append(nnx.List(layers))
        self.middle = nnx.List(middle)
        self.exit_block = strided_block(13, n(728), n(728), n(1024))
        self.sep14a = add("block14_sepconv1", SeparableConv(n(1024), n(1536), rngs=rngs))
        self.bn14a = add("block14_sepconv1_bn", batch_norm(n(1536), rngs))
        self.sep14b = add("block14_sepconv2", SeparableConv(n(1536), n(2048), rngs=rngs))
        self.bn14b = add("block14_sepconv2_bn", batch_norm(n(2048), rngs))
        self.keras_names = tuple(name for name, _ in order)
        self.out_features = n(2048)

    @staticmethod
    def _strided(block, x, *, first_relu: bool):
        (sep1, bn1, sep2, bn2), (res_conv, res_bn) = block
        residual = res_bn(res_conv(x))
        if first_relu:
            x = nnx.relu(x)
        x = bn1(sep1(x))
        x = bn2(sep2(nnx.relu(x)))
        return max_pool(x, 3, 2, "SAME") + residual

    def __call__(self, x: jax.Array) -> jax.Array:
        x = check_input(x, in_channels=self.in_channels, name="xception")
        if min(x.shape[1:3]) < 71:
            raise ValueError(f"xception: inputs must be at least 71x71, got {x.shape[1:3]}.")
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        for i, block in enumerate(self.entry):
            x = self._strided(block, x, first_relu=i > 0)
        for layers in self.middle:
            residual = x
            for sep, bn in zip(layers[0::2], layers[1::2], strict=True):
                x = bn(sep(nnx.relu(x)))
            x = x + residual
        x = self._strided(self.exit_block, x, first_relu=True)
        x = nnx.relu(self.bn14a(self.sep14a(x)))
        return nnx.relu(self.bn14b(self.sep14b(x)))

    def keras_layers(self):
        """`(keras_layer_name, block)` pairs in Keras' layer order."""
        modules = [self.conv1, self.bn1, self.conv2, self.bn2]
        for seps, res in self.entry:
            modules += list(seps) + list(res)
        for layers in self.middle:
            modules += list(layers)
        seps, res = self.exit_block
        modules += list(seps) + list(res)
        modules += [self.sep14a, self.bn14a, self.sep14b, self.bn14b]
        return list(zip(self.keras_names, modules, strict=True))
