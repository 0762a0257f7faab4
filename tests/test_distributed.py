"""Several processes through jax.distributed on 127.0.0.1: equal to one process, bit for
bit; a killed job resumes without duplicate or missing cells; bad settings fail fast."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from conftest import xla_flags
from sweep_files import SLOW_SAVES, cells, results, same

SCRIPT = textwrap.dedent("""
    import json, sys, time
    pid, n, port, out, delay, with_ig = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                         sys.argv[4], float(sys.argv[5]), sys.argv[6] == "1")
    from jaxrobust import sharding
    if n > 1:
        sharding.initialize_processes(f"127.0.0.1:{port}", n, pid, timeout=60)
    import jax, numpy as np
    from jaxrobust import models, store, sweep

    class Source:  # a lazy uint8 source that records what this process read
        def __init__(self):
            rng = np.random.default_rng(0)
            self.images = rng.integers(0, 256, (13, 20, 20, 1)).astype(np.uint8)
            self.labels = np.arange(13) % 4
            self.reads = []
        def __len__(self):
            return len(self.images)
        def __getitem__(self, idx):
            self.reads.append(np.asarray(idx).tolist())
            return self.images[idx], self.labels[idx]

    source = Source()
    net = models.get("small_cnn", num_classes=4, input_shape=(20, 20, 1), width=0.25,
                     hidden=8, seed=1)
    {SLOW_SAVES}
    table, per_image = sweep.run(
        jax.random.key(1), {"m": models.pure(net)}, source,
        levels={"scale_up": [0.0, 1.5, 4.0], "gaussian_noise": [0.0, 0.05, 0.2]},
        corruptions=("scale_up", "gaussian_noise"), batch_size=2, target="labels",
        cells_dir=out + "/cells", log=print)
    with open(f"{out}/reads_{pid}.json", "w") as f:
        json.dump(source.reads, f)
    if jax.process_index() == 0:
        store.write_results(out, table, per_image)
    if with_ig:
        from jaxrobust.attribution import integrated_gradients_source
        ig = integrated_gradients_source(models.pure(net)[0], models.pure(net)[1], source,
                                         steps=4, batch_size=2, keep_maps=True,
                                         cells_dir=out + "/ig_cells", log=print)
        if jax.process_index() == 0:
            np.savez(out + "/ig.npz", **{k: v for k, v in ig.items() if k != "seconds"})
    print("done", jax.process_count(), flush=True)
""").replace("{SLOW_SAVES}", SLOW_SAVES)
CELLS = 2 * 7  # corruptions x cells of 2 images (13 images)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out, n, pid, port, delay=0.0, ig=False):
    env = {**os.environ, "XLA_FLAGS": xla_flags(1)}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(pid), str(n), str(port),
                             str(out), str(delay), "1" if ig else "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _job(out, n, **kw):
    port = _port()
    return [_start(out, n, i, port, **kw) for i in range(n)]


def _finish(procs):
    logs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        logs.append(out)
    return logs


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """The same sweep and streamed IG on 1, 2 and 3 processes (run side by side)."""
    root = tmp_path_factory.mktemp("jobs")
    started = {n: _job(root / f"p{n}", n, ig=True) for n in (1, 2, 3)}
    for n, procs in started.items():
        assert all(f"done {n}" in log for log in _finish(procs))
    return root


def test_two_and_three_processes_equal_one_and_read_only_their_share(jobs):
    tmp_path = jobs
    one = results(tmp_path / "p1")
    for n in (2, 3):
        same(results(tmp_path / f"p{n}"), one)
        assert not (tmp_path / f"p{n}" / "results.csv.tmp").exists()
        reads = [json.loads((tmp_path / f"p{n}" / f"reads_{i}.json").read_text())
                 for i in range(n)]
        # every process reads the first image (a check) and 13 spread ones (the resume
        # fingerprint's sample, at most 16), then only the chunks of its own share, once
        # per corruption
        assert all(r[0] == [0] and r[1] == list(range(13)) for r in reads)
        shares = [sorted(i for chunk in r[2:] for i in chunk) for r in reads]
        assert sorted(i for share in shares for i in share) == sorted(2 * list(range(13)))
        assert all(share[::2] == share[1::2] for share in shares)
        with np.load(tmp_path / f"p{n}" / "ig.npz") as got, \
                np.load(tmp_path / "p1" / "ig.npz") as want:
            for k in want.files:  # the streamed IG too
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_a_killed_process_rerun_with_its_command_completes_the_job(tmp_path, jobs):
    out = tmp_path / "job"
    port = _port()
    procs = [_start(out, 2, 0, port), _start(out, 2, 1, port, delay=0.5)]
    seen = 0
    for line in procs[1].stdout:  # process 1 dies after its third cell ...
        seen += line.startswith("saved a cell")
        if seen == 3:
            procs[1].send_signal(signal.SIGKILL)
            break
    procs[1].wait(timeout=60)
    before = {p: p.stat().st_mtime_ns for p in cells(out / "cells")}
    assert 3 <= len(before) < CELLS and not (out / "results.csv").exists()
    again = _start(out, 2, 1, port)  # ... and its command is run again, alone
    logs = _finish([procs[0], again])  # process 0 waited for it and finishes the job
    assert "chunks resumed" in logs[1]
    assert len(cells(out / "cells")) == CELLS
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # not recomputed
    table, per_image = results(out)
    assert not table.duplicated(["model", "corruption", "step"]).any() and len(table) == 6
    same((table, per_image), results(jobs / "p1"))  # the uninterrupted one-process run


def test_an_unreachable_coordinator_fails_with_one_line(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "from jaxrobust import cli; raise SystemExit(cli.main())",
         "sweep", "--coordinator", f"127.0.0.1:{_port()}", "--num-processes", "2",
         "--process-id", "1", "--coordinator-timeout", "2", "--keras-model", "x.keras",
         "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "unreachable after 2 s" in err[0], proc.stderr
    assert time.perf_counter() - start < 60
    bad = subprocess.run(
        [sys.executable, "-c", "from jaxrobust import cli; raise SystemExit(cli.main())",
         "sweep", "--coordinator", "nohost", "--keras-model", "x.keras"],
        capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not HOST:PORT" in bad.stderr


def test_the_sweep_command_on_two_processes_streams_and_writes_once(tmp_path):
    keras = pytest.importorskip("keras", reason="keras is not installed (pip install keras)")
    model = keras.Sequential([keras.Input((24, 24, 1)), keras.layers.Conv2D(3, 3),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(4, activation="softmax")])
    model.save(str(tmp_path / "m.keras"))
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (10, 24, 24, 1)).astype(np.uint8))
    args = ["sweep", "--keras-model", str(tmp_path / "m.keras"), "--data",
            f"npy:{tmp_path / 'images.npy'}", "--corruptions", "gaussian_noise",
            "--set", "data.image_size=24", "--set", "sweep.batch_size=2"]

    def start(out, *extra):
        return subprocess.Popen(
            [sys.executable, "-c", "from jaxrobust import cli; raise SystemExit(cli.main())",
             *args, "--out", str(out), *extra], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "XLA_FLAGS": xla_flags(1)})

    port = _port()
    procs = [start(tmp_path / "two", "--coordinator", f"127.0.0.1:{port}",
                   "--num-processes", "2", "--process-id", str(i)) for i in range(2)]
    logs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in logs]
    assert "wrote" in logs[0][0] and logs[1][0] == ""  # process 1 prints nothing
    table = pd.read_csv(tmp_path / "two" / "results.csv")  # equality: the tests above
    assert len(table) > 1 and table["n"].eq(10).all()
    assert "10 clean images (streamed)" in (tmp_path / "two" / "report.html").read_text()


def test_the_device_script_runs_at_small_size(tmp_path):
    # benchmarks/device.sh as a GPU machine runs it, shrunk to a smoke test on this CPU
    # (one of its four benchmarks here, to keep the suite short; all four: 3.5 min)
    env = {**os.environ, "JAXROBUST_BENCH_SMALL": "1", "JAXROBUST_BENCH_ONLY": "scale"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(["bash", "benchmarks/device.sh", str(tmp_path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = sorted(p.name for p in tmp_path.glob("*.json"))
    assert [n.split("-", 2)[-1] for n in written] == ["scale.json"], written
    scale = json.loads(next(tmp_path.glob("*-scale.json")).read_text())
    runs = scale["cases"]["memory"]["runs"]
    assert len(runs) == 2 and all(r["image_levels_per_s"] > 0 for r in runs)
