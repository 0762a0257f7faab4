"""Kernels, the corruption task and IG on several (simulated) devices equal one device."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import xla_flags

from jaxrobust.sharding import local_mesh, shard_batch

SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jaxrobust.corruptions import median_blur, gaussian_noise
    from jaxrobust.sharding import shard_batch
    rng = np.random.default_rng(3)
    images = (rng.integers(0, 256, (5, 20, 24, 1)) / 255).astype(np.float32)
    keys = jax.random.split(jax.random.key(1), 5)
    blur = shard_batch(jax.vmap(median_blur, in_axes=(0, 0, None)), in_axes=(0, 0, None))
    noise = shard_batch(jax.vmap(gaussian_noise, in_axes=(0, 0, None)), in_axes=(0, 0, None))
    out = np.concatenate([np.asarray(blur(keys, images, 6.0)),
                          np.asarray(noise(keys, images, 0.1))])
    # place_batch: a divisible batch goes on the devices, split; the result is the same
    from jaxrobust.sharding import place_batch
    n = jax.device_count() * (4 // jax.device_count())
    placed_keys, placed = place_batch((keys[:n], images[:n]))
    assert placed.sharding.spec == jax.sharding.PartitionSpec("batch"), placed.sharding
    assert len(placed.sharding.device_set) == jax.device_count(), placed.sharding
    np.testing.assert_array_equal(np.asarray(noise(placed_keys, placed, 0.1)),
                                  np.asarray(noise(keys[:n], images[:n], 0.1)))
    if jax.device_count() > 1:
        assert place_batch(images) is images  # 5 images: shard_batch pads them itself
    from jaxrobust import attribution, data, models
    task = data.corruption_task(jax.random.key(2), images[:, :20, :20],
                                corruptions=("scale_up", "gaussian_noise"))
    net = models.get("small_cnn", num_classes=4, input_shape=(20, 24, 1), width=0.25,
                     hidden=8)
    apply_fn, params = models.pure(net)
    base = attribution.make_baseline(jax.random.key(4), "uniform", images)
    ig = attribution.integrated_gradients(apply_fn, params, images, np.arange(5) % 4,
                                          baseline=base, steps=8, devices=jax.device_count())
    jitted = jax.jit(lambda x: attribution.integrated_gradients(
        apply_fn, params, x, np.arange(5) % 4, baseline=base, steps=8,
        devices=jax.device_count()))(images)  # the same split, eager or under jit
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(ig), rtol=1e-6, atol=1e-7)
    np.savez(sys.argv[1], kernels=out, task=task.images, ig=np.asarray(ig))
    print(jax.device_count())
""")


def _start(tmp_path, devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags(devices, optimised=True)  # as a user's run compiles
    path = tmp_path / f"out{devices}.npz"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, path, devices


def _result(started):
    proc, path, devices = started
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert out.strip() == str(devices)
    with np.load(path) as z:
        return dict(z)


def test_four_devices_equal_one(tmp_path):
    both = _start(tmp_path, 4), _start(tmp_path, 1)  # side by side
    four, one = _result(both[0]), _result(both[1])
    np.testing.assert_array_equal(four["kernels"], one["kernels"])
    np.testing.assert_array_equal(four["task"], one["task"])
    # IG: the model sees 2 images per device instead of 5 at once; XLA's convolutions
    # may round differently for another batch size (the sweep avoids this, see
    # docs/robustness.md), so agreement is to float32 rounding.
    np.testing.assert_allclose(four["ig"], one["ig"], rtol=1e-5,
                               atol=1e-6 * np.abs(one["ig"]).max())


def test_shard_batch_checks_its_arguments():
    fn = shard_batch(lambda a, b: a + b, in_axes=(0, 0))
    with pytest.raises(ValueError, match="differ in length"):
        fn(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="devices"):
        local_mesh(jax.device_count() + 1)


def test_chunked_shards_equal_whole_shards(rng):
    from jaxrobust.corruptions import gaussian_noise, scale_up

    images = rng.random((7, 12, 10, 3), dtype=np.float32)
    keys = jax.random.split(jax.random.key(int(rng.integers(1 << 30))), 7)
    for kernel, level in ((gaussian_noise, 0.2), (scale_up, 2.0)):
        fn = jax.vmap(kernel, in_axes=(0, 0, None))
        whole = shard_batch(fn, in_axes=(0, 0, None))(keys, images, level)
        for chunk in (1, 3):
            got = shard_batch(fn, in_axes=(0, 0, None), chunk=chunk)(keys, images, level)
            assert got.shape == images.shape
            np.testing.assert_array_equal(np.asarray(got), np.asarray(whole))
    with pytest.raises(ValueError, match="chunk"):
        shard_batch(fn, in_axes=(0, 0, None), chunk=0)


def test_one_cpu_device_runs_parts_at_once(monkeypatch, rng):
    """On one CPU device a `shard_batch` call runs `cpu_threads` parts of its batch from
    a thread pool, each shaped as one of that many devices would get it; the joined
    result equals the whole batch's. Under `jit` and with the variable at 1 it is
    the plain program."""
    import threading

    from jaxrobust import sharding

    if jax.device_count() > 1 or jax.devices()[0].platform != "cpu":
        pytest.skip("the concurrent path is for one CPU device")
    traced = []

    def fn(x, s):  # a row's output also records the batch its program saw
        traced.append(threading.current_thread().name)
        return x * s + x.sum(-1, keepdims=True), jnp.full(x.shape[0], x.shape[0])

    x = rng.random((7, 5), dtype=np.float32)
    want = x * 2.0 + x.sum(-1, keepdims=True)
    for threads, chunk, part in (("1", None, 7), ("3", None, 3), ("3", 2, 2), ("2", 3, 3)):
        monkeypatch.setenv("JAXROBUST_CPU_THREADS", threads)
        assert sharding.workers() == int(threads)
        traced.clear()
        out, seen = shard_batch(fn, in_axes=(0, None), chunk=chunk)(x, 2.0)
        np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6)
        assert out.shape == x.shape
        assert set(np.asarray(seen).tolist()) == {chunk or part}, (threads, chunk, seen)
        if threads != "1":
            assert traced and all(t.startswith("jaxrobust-cpu") for t in traced), traced
    jitted = jax.jit(lambda x: shard_batch(fn, in_axes=(0, None))(x, 2.0)[1])(x)
    assert set(np.asarray(jitted).tolist()) == {7}  # traced: the whole batch at once
    # every output kind is joined as the whole batch's program gives it: key arrays
    # (joined on device), booleans and integers (through one host buffer); batches
    # smaller than the parts leave the last parts without rows
    monkeypatch.setenv("JAXROBUST_CPU_THREADS", "3")

    def kinds(k, x):
        rows = (x[:, 0] * 1000).astype(jnp.int32)  # per row, not per position in a part
        return jax.vmap(jax.random.fold_in)(k, rows), x > 0.5, x.argmax(-1)

    keys = jax.random.split(jax.random.key(int(rng.integers(1 << 30))), 7)
    for n in (7, 2, 1):
        got = shard_batch(kinds, in_axes=(0, 0))(keys[:n], x[:n])
        want = jax.jit(kinds)(keys[:n], x[:n])
        assert jax.dtypes.issubdtype(got[0].dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(jax.random.key_data(got[0]), jax.random.key_data(want[0]))
        for g, w in zip(got[1:], want[1:], strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    monkeypatch.setenv("JAXROBUST_CPU_THREADS", "two")
    with pytest.raises(ValueError, match="JAXROBUST_CPU_THREADS"):
        sharding.cpu_threads()
