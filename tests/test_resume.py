"""Sweeps in subprocesses: four devices equal one, and a killed sweep resumes exactly."""

import os
import signal
import subprocess
import sys
import textwrap

from conftest import xla_flags
from sweep_files import SLOW_SAVES, cells, results, same

SCRIPT = textwrap.dedent("""
    import sys, time
    import jax, numpy as np
    from jaxrobust import models, store, sweep
    out, delay, u8 = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "u8"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 20, 20, 1)).astype(np.uint8)
    images = images if u8 else (images / 255).astype(np.float32)
    net = models.get("small_cnn", num_classes=4, input_shape=(20, 20, 1), width=0.25,
                     hidden=8, seed=1)
    levels = {"scale_up": [0.0, 1.5, 4.0], "median_blur": [0.0, 2.0, 5.0],
              "gaussian_noise": [0.0, 0.05, 0.2]}

    {SLOW_SAVES}
    table, per_image = sweep.run(
        jax.random.key(1), {"m": models.pure(net)}, images, np.arange(12) % 4, levels=levels,
        batch_size=2, cells_dir=out + "/sweep_cells", log=print,
        class_names={"m": ["original", "scale_up", "median_blur", "gaussian_noise"]})
    store.write_results(out, table, per_image)
    print("devices", jax.device_count(), flush=True)
""").replace("{SLOW_SAVES}", SLOW_SAVES)
CELLS = 3 * 6  # corruptions x chunks of 2 images


def _start(out, *, delay=0.0, devices=1, optimised=False, u8=False):
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags(devices, optimised=optimised)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(delay),
                             "u8" if u8 else "float"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out


def test_four_devices_equal_one(tmp_path):
    # compiled as a user's run (not the suite's TEST_XLA_FLAGS): the bits must agree
    # there, between one device and four, and between float images and the same ones
    # as uint8 (converted on the device: another program around the same values)
    one = _start(tmp_path / "one", optimised=True)
    four = _start(tmp_path / "four", devices=4, optimised=True, u8=True)
    assert "devices 1" in _finish(one)
    assert "devices 4" in _finish(four)
    same(results(tmp_path / "one"), results(tmp_path / "four"))


def test_killed_sweep_resumes_without_repeating_or_losing_cells(tmp_path):
    whole = _start(tmp_path / "whole")
    killed = tmp_path / "killed"
    proc = _start(killed, delay=0.4)
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("saved a cell")
        if seen == 7:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    _finish(whole)
    before = {p: p.stat().st_mtime_ns for p in cells(killed / "sweep_cells")}
    assert 7 <= len(before) < CELLS and not (killed / "results.csv").exists()
    log = _finish(_start(killed))
    assert "chunks resumed" in log
    after = cells(killed / "sweep_cells")
    assert len(after) == CELLS
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # not recomputed
    table, per_image = results(killed)
    assert not table.duplicated(["model", "corruption", "step"]).any() and len(table) == 9
    same((table, per_image), results(tmp_path / "whole"))
