"""Batch sharding over several (simulated) devices gives the one-device result."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

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
    np.save(sys.argv[1], out)
    print(jax.device_count())
""")


def _run(tmp_path, devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    path = tmp_path / f"out{devices}.npy"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(devices)
    return np.load(path)


def test_four_devices_equal_one(tmp_path):
    np.testing.assert_array_equal(_run(tmp_path, 4), _run(tmp_path, 1))


def test_shard_batch_checks_its_arguments():
    fn = shard_batch(lambda a, b: a + b, in_axes=(0, 0))
    with pytest.raises(ValueError, match="differ in length"):
        fn(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="devices"):
        local_mesh(jax.device_count() + 1)
