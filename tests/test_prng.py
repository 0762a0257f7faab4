"""jaxrobust's CPU speed-ups for random draws change compiled programs, never values."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrobust
from jaxrobust import _fusion, _prng

# Stock JAX in a fresh interpreter (jaxrobust never imported): the reference values.
_STOCK = """
import json, sys
import jax, jax.numpy as jnp
seed, shapes = json.loads(sys.argv[1])
key = jax.random.key(seed)
k1, k2 = jax.random.split(key)
out = {
    "normal": [jax.random.normal(k1, s).tolist() for s in shapes],
    "uniform": [jax.random.uniform(k2, s).tolist() for s in shapes],
    "bounded": jax.random.uniform(k2, (7, 5, 3), jnp.float32, -0.3, 0.7).tolist(),
    "vmapped": jax.vmap(lambda k: jax.random.normal(k, (3, 4, 3)))(
        jax.random.split(key, 5)).tolist(),
    "jit": jax.jit(lambda k: jax.random.normal(k, (2, 5, 3)))(k2).tolist(),
}
print(json.dumps(out))
"""


def test_draws_are_bit_identical_to_stock_jax(rng):
    seed = int(rng.integers(0, 2**31))
    shapes = [(7, 5, 3), (4, 6, 1), (11,)]
    done = subprocess.run([sys.executable, "-c", _STOCK, json.dumps([seed, shapes])],
                          capture_output=True, text=True, check=True)
    stock = json.loads(done.stdout)
    key = jax.random.key(seed)
    k1, k2 = jax.random.split(key)
    for shape, want in zip(shapes, stock["normal"], strict=True):
        np.testing.assert_array_equal(np.asarray(_prng.normal(k1, shape)), want)
        np.testing.assert_array_equal(np.asarray(jax.random.normal(k1, shape)), want)
    for shape, want in zip(shapes, stock["uniform"], strict=True):
        got = jax.jit(lambda k, s=shape: _prng.uniform(k, s))(k2)
        np.testing.assert_array_equal(np.asarray(got), want)
    # bounds: the same bits; `u * (hi - lo) + lo` may round an ulp of the range apart
    # between compiled contexts (constant folding, FMA), in stock JAX as well
    got = jax.jit(lambda k: _prng.uniform(k, (7, 5, 3), jnp.float32, -0.3, 0.7))(k2)
    np.testing.assert_allclose(np.asarray(got), stock["bounded"], rtol=0, atol=1.2e-7)
    vmapped = jax.jit(jax.vmap(lambda k: _prng.normal(k, (3, 4, 3))))(jax.random.split(key, 5))
    np.testing.assert_array_equal(np.asarray(vmapped), stock["vmapped"])
    np.testing.assert_array_equal(
        np.asarray(jax.jit(lambda k: jax.random.normal(k, (2, 5, 3)))(k2)), stock["jit"])


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU lowering")
def test_cpu_threefry_is_unrolled_once_enabled():
    assert jaxrobust.cpu.enable_fast_random()  # conftest turned it on, as the CLI does
    assert jaxrobust.cpu.fast_random_enabled()
    text = jax.jit(lambda k: jax.random.bits(k, (64,))).lower(jax.random.key(0)).as_text()
    assert "while" not in text  # JAX's own CPU lowering is a fori_loop over 5 blocks


_LOWERED = """
import jax
def text():
    return jax.jit(lambda k: jax.random.normal(k, (64, 3))).lower(jax.random.key(0)).as_text()
before = text()
import jaxrobust
from jaxrobust import _prng, attribution, corruptions, studies, sweep  # noqa: F401
from jaxrobust.studies import corruption, counterfactual, kernels  # noqa: F401
ours = jax.jit(lambda k: _prng.normal(k, (64, 3))).lower(jax.random.key(0)).as_text()
print(before == text(), "while" in before, "while" in ours)
"""


def test_importing_jaxrobust_changes_no_lowering():
    # A fresh interpreter: the program JAX lowers for `jax.random.normal` is the same
    # before and after `import jaxrobust` (the fast lowering is an explicit switch),
    # while jaxrobust's own draws are unrolled there too (no `enable_fast_random`).
    done = subprocess.run([sys.executable, "-c", _LOWERED], capture_output=True, text=True,
                          check=True)
    same, rolled, ours_rolled = done.stdout.split()
    assert same == "True"
    assert ours_rolled == "False"
    if jax.default_backend() == "cpu":
        assert rolled == "True"  # stock JAX's CPU lowering, untouched


def test_threefry2x32_is_jax_primitive(rng):
    from jax.extend.random import threefry2x32_p

    k = rng.integers(0, 2**32, size=2, dtype=np.uint64).astype(np.uint32)
    x = rng.integers(0, 2**32, size=(2, 257), dtype=np.uint64).astype(np.uint32)
    want = threefry2x32_p.bind(*(jnp.asarray(a) for a in (k[0], k[1], x[0], x[1])))
    got = jax.jit(_prng.threefry2x32)(k[0], k[1], x[0], x[1])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_uniform_outside_the_reproduced_set_up_is_jax_random_uniform():
    # other PRNG implementations, raw keys, other dtypes: JAX draws itself, same values
    for key in (jax.random.key(5, impl="rbg"), jax.random.PRNGKey(5)):
        np.testing.assert_array_equal(np.asarray(jax.jit(lambda k: _prng.uniform(k, (9,)))(key)),
                                      np.asarray(jax.random.uniform(key, (9,))))
    key = jax.random.key(5)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(lambda k: _prng.uniform(k, (9,), jnp.bfloat16))(key)),
        np.asarray(jax.random.uniform(key, (9,), jnp.bfloat16)))


def test_flat_equals_direct_under_jit_and_vmap(rng):
    x = jnp.asarray(rng.random((3, 6, 5, 3), dtype=np.float32))
    s = jnp.asarray(rng.random(3, dtype=np.float32))

    def heavy(x, s):
        return jnp.exp(-x * s) * jnp.sin(3.0 * x) + s

    def kernel(x, s):
        return _fusion.flat(lambda v: heavy(v, s), x)

    want = jax.vmap(heavy)(x, s)
    got = jax.jit(jax.vmap(kernel))(x, s)
    assert got.shape == x.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
    once = _fusion.separately(lambda a, b: a * b, x[0], 2.0)
    np.testing.assert_array_equal(np.asarray(once), np.asarray(x[0] * 2.0))


def test_separated_work_keeps_its_gradients(rng):
    x = jnp.asarray(rng.random((2, 5, 4, 3), dtype=np.float32))

    def heavy(v):
        return jnp.exp(-v) * jnp.sin(3.0 * v)

    def loss(fn, x):
        return jnp.sum(jax.vmap(fn)(x) ** 2)

    want = jax.grad(lambda x: loss(heavy, x))(x)
    got = jax.jit(jax.grad(lambda x: loss(lambda v: _fusion.flat(heavy, v), x)))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    # a corruption kernel built on it stays differentiable in its image
    from jaxrobust.corruptions import gaussian_noise

    g = jax.grad(lambda v: jnp.sum(gaussian_noise(jax.random.key(1), v, 0.05)))(x[0])
    noisy = np.asarray(gaussian_noise(jax.random.key(1), x[0], 0.05))
    inside = (noisy > 0) & (noisy < 1)  # d/dx clip(x + noise): 1 inside, 0 where clipped
    np.testing.assert_array_equal(np.asarray(g), inside.astype(np.float32))


@pytest.mark.parametrize("name", ["gaussian_noise", "pixelate", "zoom_blur", "motion_blur",
                                  "spatter"])
def test_an_eager_kernel_call_compiles_nothing_new_the_second_time(rng, caplog, name):
    # Called on concrete arrays, `separately` runs `fn` as it is, and the kernels' loops
    # and switches are jitted helpers: an eager `lax.cond` / `lax.scan` of a fresh
    # closure compiled a program at every call (0.2-6 s each).
    from jaxrobust import corruptions, metrics

    x = jnp.asarray(rng.random((12, 10, 3), dtype=np.float32))
    kernel = corruptions.get(name).apply
    level = float(corruptions.seed_levels(name, image_size=12)[-2])

    def once(seed):
        out = kernel(jax.random.key(seed), x, level)
        return out, metrics.ssim(x, out)

    once(0)
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        second, score = once(1)
    compiled = [r.getMessage() for r in caplog.records if "compil" in r.getMessage().lower()]
    assert compiled == []
    want = jax.jit(kernel)(jax.random.key(1), x, level)  # the whole kernel compiled
    np.testing.assert_allclose(np.asarray(second), np.asarray(want), rtol=0, atol=1e-5)
    assert float(score) == pytest.approx(float(jax.jit(metrics.ssim)(x, want)), abs=1e-5)
