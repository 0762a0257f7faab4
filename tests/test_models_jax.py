"""Model construction, the pure apply function, and gradients (no Keras needed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import models

TINY = {"vgg16": ((32, 32, 1), 0.125), "xception": ((71, 71, 1), 0.0625),
        "small_cnn": ((28, 28, 1), 0.5)}


@pytest.mark.parametrize("name", list(TINY))
def test_pure_apply_jit_vmap_and_input_gradient(rng, name):
    shape, width = TINY[name]
    net = models.get(name, num_classes=4, input_shape=shape, width=width, hidden=16)
    apply_fn, params = models.pure(net)
    x = jnp.asarray(rng.random((3, *shape), dtype=np.float32))
    logits = jax.jit(apply_fn)(params, x)
    assert logits.shape == (3, 4)
    # jitted: op by op, vmap and grad of Xception took 17 s of this test
    one = jax.jit(jax.vmap(lambda im: apply_fn(params, im[None])[0]))(x)
    np.testing.assert_allclose(np.asarray(one), np.asarray(logits), rtol=1e-5, atol=1e-5)
    grad = jax.jit(jax.grad(lambda im: apply_fn(params, im[None])[0, 2]))(x[0])
    assert grad.shape == shape and np.all(np.isfinite(np.asarray(grad)))
    assert float(jnp.abs(grad).sum()) > 0


def test_study_head_and_full_size_parameter_counts():
    assert models.count_params(models.pure(models.backbone("vgg16"))[1]) == 14_714_688
    net = models.get("small_cnn", num_classes=10, input_shape=(28, 28, 1))
    assert net.hidden.out_features == 1028 and net.logits.out_features == 10


def test_kernel_init_equals_flax_lecun_normal(rng):
    # Flax's default kernel initializer, drawn flat in shared buckets: the same values
    # as the stock initializer, for conv, depthwise, 1x1 and dense kernels (fresh keys,
    # sizes inside the smallest bucket, at its edge and past it).
    from flax import nnx

    from jaxrobust.models.init import MIN_BUCKET, lecun_normal

    ours, stock = lecun_normal(), nnx.initializers.lecun_normal()
    shapes = [(3, 3, 5, 7), (3, 3, 1, 11), (1, 1, 13, 6), (37, 19), (MIN_BUCKET // 8, 8),
              (3, 3, 45, 13), (2, 3, 4, 5, 6)]
    for shape in shapes:
        key = jax.random.key(int(rng.integers(2**31)))
        got, want = ours(key, shape), stock(key, shape)
        assert got.shape == shape and got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    abstract = jax.eval_shape(lambda k: ours(k, (3, 3, 2, 4)), jax.random.key(0))
    assert abstract.shape == (3, 3, 2, 4)
    with pytest.raises(ValueError, match="at least 2 axes"):
        ours(jax.random.key(0), (5,))


def test_bad_model_input():
    apply_fn, params = models.pure(models.backbone("small_cnn", in_channels=1))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        apply_fn(params, jnp.zeros((28, 28, 1)))
    with pytest.raises(ValueError, match="channels"):
        apply_fn(params, jnp.zeros((1, 28, 28, 2)))
    with pytest.raises(ValueError, match="known models"):
        models.get("resnet", num_classes=2, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="71x71"):
        models.get("xception", num_classes=2, input_shape=(32, 32, 3), width=0.1)


@pytest.mark.parametrize("shape,kernel", [((3, 17, 12, 1), 3), ((2, 9, 11, 1), 5)])
def test_one_channel_conv_relu_pool_equals_xla(rng, shape, kernel):
    from flax import nnx

    from jaxrobust.models import layers

    module = nnx.Conv(1, 8, (kernel, kernel), padding="SAME",
                      rngs=nnx.Rngs(int(rng.integers(1 << 30))))
    x = jnp.asarray(rng.random(shape, dtype=np.float32))

    ours = layers._conv_relu_pool_one_channel  # what conv_relu_pool runs here

    def xla(x, k, b):  # what the module and the pool compute
        out = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return nnx.max_pool(nnx.relu(out + b.reshape(1, 1, 1, -1)), (2, 2), strides=(2, 2),
                            padding="VALID")

    k, b = module.kernel[...], module.bias[...]
    want = np.asarray(xla(x, k, b))
    np.testing.assert_allclose(np.asarray(jax.jit(ours)(x, k, b)), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layers.conv_relu_pool(module, x)), want, rtol=1e-5,
                               atol=1e-6)
    weights = jnp.asarray(rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, 8)),
                          jnp.float32)
    got = jax.grad(lambda *a: jnp.sum(ours(*a) * weights), argnums=(0, 1, 2))(x, k, b)
    want = jax.grad(lambda *a: jnp.sum(xla(*a) * weights), argnums=(0, 1, 2))(x, k, b)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)
