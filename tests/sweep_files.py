"""Reading and comparing the files a sweep in a subprocess wrote (shared by the tests
that run sweeps in other processes)."""

import numpy as np
import pandas as pd


def results(out):
    """`(results.csv as a DataFrame, per_image.npz as a dict)` of the folder `out`."""
    table = pd.read_csv(out / "results.csv")
    with np.load(out / "per_image.npz") as z:
        return table, {k: z[k] for k in z.files}


def same(a, b):
    """Asserts that two `results` are equal, every per-image array bit for bit."""
    pd.testing.assert_frame_equal(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)


def cells(folder):
    """The finished cell files under `folder` (no temporary leftovers), sorted."""
    return sorted(p for p in folder.rglob("*.npz") if ".tmp" not in p.name)


#: Script lines (for a sweep run with `python -c`) that announce each saved cell on
#: stdout and then pause `delay` seconds, so that a test can kill the sweep mid-way.
SLOW_SAVES = """
save = store.SweepStore.save
def save_slowly(self, *args):  # each saved cell is announced, then a pause
    save(self, *args)
    print("saved a cell", flush=True)
    time.sleep(delay)
store.SweepStore.save = save_slowly
"""
