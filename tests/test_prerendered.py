"""Pre-rendered benchmarks in (`cifar10c:`, `imagenetc:`) and out (`jaxrobust render`):
layouts written here by hand load, render round-trips, a sweep puts the pre-rendered
and on-the-fly accuracies side by side, and bad files get one clear error."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3 without TensorFlow

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from jaxrobust import cli, corruptions  # noqa: E402
from jaxrobust.data import stream  # noqa: E402
from jaxrobust.data.prerendered import open_prerendered  # noqa: E402
from jaxrobust.studies import render  # noqa: E402


def _clean(rng, n=12, side=32, classes=4):
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(rng.random((n, side, side, 3)), (0, 2, 2, 0))
    smooth = (smooth - smooth.min()) / np.ptp(smooth)
    images = np.round(smooth * 255).astype(np.uint8)
    labels = np.arange(n) % classes
    return images, labels


def test_hand_written_layouts_load(tmp_path, rng):
    images, labels = _clean(rng, n=6)
    stacked = np.concatenate([(images // (s + 1)).astype(np.uint8) for s in range(5)])
    np.save(tmp_path / "fog.npy", stacked)
    np.save(tmp_path / "notes.npy", np.zeros(3))  # not a corruption: ignored
    np.save(tmp_path / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    pset = open_prerendered(f"cifar10c:{tmp_path}")
    assert pset.corruptions == ["fog"]
    got, got_labels = pset.source("fog", 3)[np.arange(6)]
    np.testing.assert_array_equal(got, images // 3)
    np.testing.assert_array_equal(got_labels, labels)
    tree = tmp_path / "tree"
    for s in range(1, 6):
        for wnid in ("n02", "n01"):
            os.makedirs(tree / "contrast" / str(s) / wnid)
            Image.fromarray(images[0]).save(tree / "contrast" / str(s) / wnid / "a.JPEG",
                                            quality=95)
    pset = open_prerendered(f"imagenetc:{tree}")
    assert pset.class_names == ("n01", "n02") and pset.image_size == 32
    got, got_labels = pset.source("contrast", 5)[np.arange(2)]
    assert got.shape == (2, 32, 32, 3) and list(got_labels) == [0, 1]  # sorted wnids
    decoded = np.asarray(Image.open(tree / "contrast" / "5" / "n01" / "a.JPEG"))
    np.testing.assert_array_equal(got[0], decoded)  # the file's pixels, as Pillow reads them


def test_bad_prerendered_files_are_named(tmp_path, rng):
    images, labels = _clean(rng, n=5)
    np.save(tmp_path / "fog.npy", images)
    with pytest.raises(ValueError, match=r"labels\.npy is missing"):
        open_prerendered(f"cifar10c:{tmp_path}")
    np.save(tmp_path / "labels.npy", np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match=r"fog\.npy: shape \(5, 32, 32, 3\) uint8; a CIFAR-10-C "
                                         "file holds 10 uint8 images"):
        open_prerendered(f"cifar10c:{tmp_path}")
    tree = tmp_path / "tree"
    for s in (1, 2, 4, 5):
        os.makedirs(tree / "snow" / str(s) / "n01")
    with pytest.raises(ValueError, match=r"snow/3 is missing"):
        open_prerendered(f"imagenetc:{tree}")
    with pytest.raises(ValueError, match="unknown pre-rendered set"):
        open_prerendered(f"cifar100c:{tmp_path}")


def test_render_round_trips_in_both_layouts(tmp_path, rng):
    images, labels = _clean(rng)
    source = stream.as_source(images, labels)
    names = ["contrast", "elastic_transform"]
    out = render.render(source, str(tmp_path / "c"), layout="cifar10c", names=names,
                        table="cifar10", seed=3, log=lambda s: None)
    pset = open_prerendered(f"cifar10c:{out}")
    assert pset.corruptions == names
    import jax

    for c_index, name in enumerate(names):
        key = jax.random.fold_in(render._prng.stream(3, "render"), c_index)
        for s in (1, 4):
            want = np.concatenate([u8 for _, u8, _ in render.corrupted_u8(
                key, source, name, s, table="cifar10")])
            got, got_labels = pset.source(name, s)[np.arange(len(images))]
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got_labels, labels)
    # the same seed writes the same bytes; another seed other random corruptions
    again = render.render(source, str(tmp_path / "c2"), layout="cifar10c", names=names,
                          table="cifar10", seed=3, log=lambda s: None)
    for f in ("contrast.npy", "elastic_transform.npy", "labels.npy"):
        assert open(os.path.join(out, f), "rb").read() == open(os.path.join(again, f),
                                                               "rb").read()
    with pytest.raises(FileExistsError):
        render.render(source, out, layout="cifar10c", names=names, log=lambda s: None)
    # the ImageNet-C tree: JPEG quality 85, read back up to JPEG
    classes = ["n0001", "n0002", "n0003", "n0004"]
    tree = render.render(source, str(tmp_path / "i"), layout="imagenetc", names=["contrast"],
                         table="tinyimagenet", seed=3, class_names=classes,
                         log=lambda s: None)
    pset = open_prerendered(f"imagenetc:{tree}")
    assert pset.class_names == tuple(classes)
    key = jax.random.fold_in(render._prng.stream(3, "render"), 0)
    want = np.concatenate([u8 for _, u8, _ in render.corrupted_u8(
        key, source, "contrast", 2, table="tinyimagenet")])
    src = pset.source("contrast", 2)
    got, got_labels = src[np.arange(len(src))]
    order = np.argsort([os.path.basename(p) for p in src.paths])  # files are index-named
    assert np.abs(got[order].astype(float) - want).mean() < 6
    np.testing.assert_array_equal(got_labels[order], labels)


def test_sweep_puts_prerendered_and_on_the_fly_side_by_side(tmp_path, rng, capsys):
    keras = pytest.importorskip("keras", reason="keras is not installed (pip install keras)")
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(4, activation="softmax")])
    model.save(str(tmp_path / "m.keras"))
    images, labels = _clean(rng)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    data = f"npy:{tmp_path / 'x.npy'},{tmp_path / 'y.npy'}"
    names = ["contrast", "pixelate"]

    def sweep(prerendered, out, *options):
        return cli.main(["sweep", "--keras-model", str(tmp_path / "m.keras"), "--data", data,
                         "--prerendered", prerendered, "--class-names", "a", "b", "c", "d",
                         "--set", "data.image_size=32", "--set", "data.channels=3",
                         *options, "--out", str(tmp_path / out), "-q"])

    labels_cifar = ("--table", "cifar10", "--set", "sweep.target=labels")
    assert cli.main(["render", "--data", data, "--layout", "cifar10c", "--table", "cifar10",
                     "--corruptions", *names, "--out", str(tmp_path / "c"), "-q"]) == 0
    assert sweep(f"cifar10c:{tmp_path / 'c'}", "sweep", *labels_cifar) == 0
    out = tmp_path / "sweep"
    side = pd.read_csv(out / "prerendered.csv")
    assert sorted(set(side["corruption"])) == names and len(side) == 10
    # deterministic corruptions: the 8-bit files and the float on-the-fly images give
    # (nearly) the same predictions
    assert (side["difference"].abs() <= 2 / 12 + 1e-9).all(), side
    results = pd.read_csv(out / "results.csv")
    np.testing.assert_allclose(sorted(set(results[results["corruption"] == "contrast"][
        "level"])), sorted(corruptions.severity("contrast", [1, 2, 3, 4, 5],
                                                table="cifar10")), rtol=1e-6)
    html = (out / "report.html").read_text()
    assert "Pre-rendered" in html and "on-the-fly accuracy" in html
    # the ImageNet-C layout: JPEG files, classes from the sorted folder names
    assert cli.main(["render", "--data", data, "--layout", "imagenetc", "--table", "cifar10",
                     "--corruptions", "contrast", "--out", str(tmp_path / "i"), "-q"]) == 0
    assert sweep(f"imagenetc:{tmp_path / 'i'}", "sweep_i", *labels_cifar) == 0
    side = pd.read_csv(tmp_path / "sweep_i" / "prerendered.csv")
    assert list(side["corruption"].unique()) == ["contrast"] and len(side) == 5
    assert side["pre-rendered accuracy"].notna().all() and side["on-the-fly accuracy"].notna().all()
    assert "Pre-rendered" in (tmp_path / "sweep_i" / "report.html").read_text()
    # a missing set is one clear error, before any work
    assert sweep(f"cifar10c:{tmp_path / 'nowhere'}", "none", *labels_cifar) != 0
    assert "does not exist or is not a folder" in capsys.readouterr().err
    # a pre-rendered comparison needs the labels target
    assert sweep(f"cifar10c:{tmp_path / 'c'}", "bad") != 0
    assert "sweep.target=labels" in capsys.readouterr().err
