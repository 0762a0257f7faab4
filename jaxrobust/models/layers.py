"""Keras-compatible building blocks: conv + batch norm with Keras' defaults.

Each block records how its variables map to a Keras layer's weight list, so the
Keras-weights importer walks a model's blocks in Keras' layer order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrobust._fusion import separately
from jaxrobust.models.init import lecun_normal

#: Flax's default kernel initializer, drawn with a few compiled programs per model
#: (`jaxrobust.models.init`: the same values).
KERNEL_INIT = lecun_normal()

#: Keras' BatchNormalization defaults (Flax's epsilon is 1e-5).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99


def conv(in_features: int, out_features: int, kernel_size, **kwargs) -> nnx.Conv:
    """`nnx.Conv(in_features, out_features, kernel_size, **kwargs)` with `KERNEL_INIT`."""
    return nnx.Conv(in_features, out_features, kernel_size, kernel_init=KERNEL_INIT, **kwargs)


def dense(in_features: int, out_features: int, **kwargs) -> nnx.Linear:
    """`nnx.Linear(in_features, out_features, **kwargs)` with `KERNEL_INIT`."""
    return nnx.Linear(in_features, out_features, kernel_init=KERNEL_INIT, **kwargs)


def batch_norm(features: int, rngs: nnx.Rngs, momentum: float = BN_MOMENTUM) -> nnx.BatchNorm:
    """Keras' BatchNormalization (epsilon 1e-3). `momentum` only matters in training:
    Keras' 0.99 needs a few hundred steps before the running statistics settle."""
    return nnx.BatchNorm(features, epsilon=BN_EPSILON, momentum=momentum, rngs=rngs)


class SeparableConv(nnx.Module):
    """Keras' `SeparableConv2D(depth_multiplier=1)`: a depthwise then a 1x1 conv.

    Works on `(N, H, W, C_in)` and returns `(N, H, W, C_out)`.
    """

    def __init__(self, in_features: int, out_features: int, *, kernel_size=(3, 3),
                 padding="SAME", use_bias=False, rngs: nnx.Rngs):
        self.depthwise = conv(in_features, in_features, kernel_size, padding=padding,
                              feature_group_count=in_features, use_bias=False, rngs=rngs)
        self.pointwise = conv(in_features, out_features, (1, 1), use_bias=use_bias,
                              rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.pointwise(self.depthwise(x))


def _conv_relu_pool_reference(x, kernel, bias):
    """Conv ('SAME', stride 1) + bias, ReLU, 2x2 max-pool (stride 2, 'VALID') by XLA's
    own ops: the definition, and the backward pass of `_conv_relu_pool_one_channel`."""
    out = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return max_pool(jax.nn.relu(out + bias.reshape(1, 1, 1, -1)), 2, 2, "VALID")


@jax.custom_vjp
def _conv_relu_pool_one_channel(x, kernel, bias):
    """`_conv_relu_pool_reference` for one input channel, in one fused elementwise
    pass: each pooled output is the max over its 2x2 window of `kh * kw` shifted
    (stride-2) multiply-adds, so the full-resolution conv output is never stored.
    Compiled apart (`jaxrobust._fusion`), so that XLA does not fuse it into the next
    conv's layout."""
    return separately(_conv_relu_pool_loop, x, kernel, bias)


def _conv_relu_pool_loop(x, kernel, bias):
    N, H, W = x.shape[:3]
    kh, kw = kernel.shape[:2]
    # the one channel dropped before padding: a pad of (N, H, W, 1) runs along a minor
    # axis of 1, element by element
    padded = jnp.pad(x[..., 0], ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    ph, pw = H // 2, W // 2
    kernel = kernel.reshape(kh, kw, 1, 1, 1, -1)  # taps over (N, H, W, C_out)
    best = None
    for a in range(2):
        for b in range(2):
            acc = bias.reshape(1, 1, 1, -1)
            for dy in range(kh):
                for dx in range(kw):
                    window = jax.lax.slice(
                        padded, (0, a + dy, b + dx),
                        (N, a + dy + 2 * ph - 1, b + dx + 2 * pw - 1), (1, 2, 2))
                    acc = acc + window[..., None] * kernel[dy, dx]
            best = acc if best is None else jnp.maximum(best, acc)
    return jax.nn.relu(best)


def _conv_relu_pool_fwd(x, kernel, bias):
    return _conv_relu_pool_one_channel(x, kernel, bias), (x, kernel, bias)


def _conv_relu_pool_bwd(saved, g):
    return jax.vjp(_conv_relu_pool_reference, *saved)[1](g)  # XLA's own gradients


_conv_relu_pool_one_channel.defvjp(_conv_relu_pool_fwd, _conv_relu_pool_bwd)


def conv_relu_pool(module: nnx.Conv, x: jax.Array) -> jax.Array:
    """`max_pool(relu(module(x)), 2, 2, 'VALID')`, faster on CPU for one input channel.

    XLA's CPU convolution is built for many input channels, and for one it is slow;
    the full-resolution output it stores before the pool costs more still. For that
    case (stride 1, 'SAME', odd kernel, bias) the forward pass is one fused
    elementwise loop (see `_conv_relu_pool_one_channel`) and the backward pass is
    XLA's own (conv and max-pool gradients, ties included). Same values up to float
    rounding (tested). Reverse-mode only (a `custom_vjp`: `jax.grad`, not `jax.jvp`).
    Any other configuration runs the module and the pool.
    """
    kernel = module.kernel[...]
    kh, kw, c_in, _ = kernel.shape
    if (c_in != 1 or x.shape[-1] != 1 or module.bias is None or kh % 2 == 0 or kw % 2 == 0
            or module.padding != "SAME" or module.strides not in (1, (1, 1), None)
            or module.kernel_dilation not in (1, (1, 1), None)
            or module.input_dilation not in (1, (1, 1), None)
            or module.feature_group_count != 1):
        return max_pool(nnx.relu(module(x)), 2, 2, "VALID")
    return _conv_relu_pool_one_channel(x, kernel.astype(x.dtype),
                                       module.bias[...].astype(x.dtype))


def keras_weights(module) -> list[tuple[nnx.Variable, str]]:
    """The variables of `module` in Keras' weight order, with the Keras kind of each.

    Kinds: "kernel", "bias", "depthwise_kernel" (Keras `(kh, kw, C, 1)`, Flax
    `(kh, kw, 1, C)`), "gamma", "beta", "moving_mean", "moving_variance".
    """
    if isinstance(module, SeparableConv):
        out = [(module.depthwise.kernel, "depthwise_kernel"), (module.pointwise.kernel, "kernel")]
        if module.pointwise.bias is not None:
            out.append((module.pointwise.bias, "bias"))
        return out
    if isinstance(module, nnx.BatchNorm):
        return [(module.scale, "gamma"), (module.bias, "beta"),
                (module.mean, "moving_mean"), (module.var, "moving_variance")]
    if isinstance(module, (nnx.Conv, nnx.Linear)):
        out = [(module.kernel, "kernel")]
        if module.bias is not None:
            out.append((module.bias, "bias"))
        return out
    raise TypeError(f"no Keras mapping for {type(module).__name__}")


def keras_class(module) -> str:
    """The Keras layer class a block stands for."""
    return {SeparableConv: "SeparableConv2D", nnx.BatchNorm: "BatchNormalization",
            nnx.Conv: "Conv2D", nnx.Linear: "Dense"}[type(module)]


def to_flax(kind: str, value):
    """A Keras weight array in the layout of the matching Flax variable."""
    if kind == "depthwise_kernel":
        return jnp.swapaxes(jnp.asarray(value), 2, 3)
    return jnp.asarray(value)


def max_pool(x, window: int, stride: int, padding: str):
    """Keras' MaxPooling2D on `(N, H, W, C)` ('same' pads with -inf, as Keras does)."""
    return nnx.max_pool(x, (window, window), strides=(stride, stride), padding=padding)


def check_input(x, *, in_channels: int, name: str) -> jax.Array:
    """Checks a `(N, H, W, C)` batch and repeats a grayscale channel when needed."""
    if x.ndim != 4:
        raise ValueError(
            f"{name}: expected a batch of shape (N, H, W, C), got shape {tuple(x.shape)}; "
            "add a batch axis with images[None] for one image."
        )
    channels = x.shape[-1]
    if channels == 1 and in_channels == 3:
        return jnp.repeat(x, 3, axis=-1)  # grayscale as the study fed it: cv2.merge x3
    if channels != in_channels:
        raise ValueError(
            f"{name}: the model takes {in_channels} channels (or 1, repeated), "
            f"got {channels}; build it with in_channels={channels}."
        )
    return x
